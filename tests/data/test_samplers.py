"""Training samplers: infinite seeded rank-sharded stream, resume offsets, class-balanced source
sampling (docs/method.md "Datasets"), class-index files, and the class-balanced train loader."""
from __future__ import annotations

import gzip
import itertools
import json
import os

import numpy as np
import pytest
from PIL import Image

from spcl.config import load_config
from spcl.data import build_dataset, build_train_loader
from spcl.data.io import write_label_png
from spcl.data.labels import labelid_to_trainid_lut
from spcl.data.samplers import ClassBalancedSampler, InfiniteSampler, load_class_index, sample_seed


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


# ------------------------------------------------------------------------------- infinite ---
def test_infinite_sampler_each_index_once_per_epoch():
    size = 13
    items = take(InfiniteSampler(size, seed=3), size * 4)
    idx = [i for i, _ in items]
    for e in range(4):
        assert sorted(idx[e * size:(e + 1) * size]) == list(range(size))
    assert idx[:size] != idx[size:2 * size]  # a fresh permutation each epoch
    assert idx[:size] != list(range(size))  # shuffled
    assert [s for _, s in items] == [sample_seed(3, p) for p in range(size * 4)]
    assert len({s for _, s in items}) == size * 4  # one augmentation seed per stream position


def test_infinite_sampler_without_shuffle_and_errors():
    assert [i for i, _ in take(InfiniteSampler(4, shuffle=False), 9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    with pytest.raises(ValueError):
        InfiniteSampler(0)


def test_two_ranks_are_disjoint_and_interleave_to_the_single_stream():
    size, n = 10, 40
    single = take(InfiniteSampler(size, seed=7), 2 * n)
    r0 = take(InfiniteSampler(size, seed=7, rank=0, world_size=2), n)
    r1 = take(InfiniteSampler(size, seed=7, rank=1, world_size=2), n)
    assert r0 == single[0::2] and r1 == single[1::2]
    merged = [x for pair in zip(r0, r1) for x in pair]
    assert merged == single
    # within one epoch the two shards hold different files, together all of them
    e0, e1 = {i for i, _ in r0[:size // 2]}, {i for i, _ in r1[:size // 2]}
    assert not e0 & e1 and e0 | e1 == set(range(size))
    assert not {s for _, s in r0} & {s for _, s in r1}  # disjoint stream positions


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_start_skips_consumed_items(world, rank):
    full = take(InfiniteSampler(7, seed=1, rank=rank, world_size=world), 30)
    for n in (0, 1, 5, 12):
        resumed = take(InfiniteSampler(7, seed=1, rank=rank, world_size=world, start=n), 30 - n)
        assert resumed == full[n:]


def test_different_seeds_give_different_streams():
    a = take(InfiniteSampler(20, seed=0), 20)
    b = take(InfiniteSampler(20, seed=1), 20)
    assert a == take(InfiniteSampler(20, seed=0), 20) and a != b


# -------------------------------------------------------------------------- class balanced ---
def skewed_index(n=200):
    """Class 0 in every file, class 1 in half, class 2 in 10 files, class 4 in 2; class 3 in none."""
    files = []
    for i in range(n):
        c = [0]
        if i % 2 == 0:
            c.append(1)
        if i % 20 == 3:
            c.append(2)
        if i in (5, 77):
            c.append(4)
        files.append(c)
    return files


def test_class_balanced_never_draws_an_absent_class():
    files = skewed_index()
    s = ClassBalancedSampler(files, num_classes=6, seed=0, block=50)
    assert s.present.tolist() == [True, True, True, False, True, False]
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = s.class_probabilities(rng.integers(0, 30, 6).astype(float))
        assert p[3] == 0 and p[5] == 0 and abs(p.sum() - 1) < 1e-12 and (p[[0, 1, 2, 4]] > 0).all()
    draws = [i for i, _ in take(s, 2000)]
    assert all(0 <= i < len(files) for i in draws)
    # labels out of range in the index are ignored rather than crashing
    ClassBalancedSampler([[0, 255, -1], [1]], num_classes=2)
    with pytest.raises(ValueError):
        ClassBalancedSampler([[], [7]], num_classes=3)


def test_class_probabilities_formula():
    s = ClassBalancedSampler([[0], [1], [2]], num_classes=3)
    counts = np.array([6.0, 3.0, 1.0])
    w = 1 / np.log(1.01 + counts / 10)
    np.testing.assert_allclose(s.class_probabilities(counts), w / w.sum())
    np.testing.assert_allclose(s.class_probabilities(np.zeros(3)), [1 / 3] * 3)  # start of a block


def test_class_balanced_is_roughly_balanced_on_a_skewed_index():
    files = skewed_index()
    n = 3000
    draws = [i for i, _ in take(ClassBalancedSampler(files, num_classes=6, seed=1, block=3000), n)]
    uniform = [i for i, _ in take(InfiniteSampler(len(files), seed=1), n)]

    def frac_with(cls, idx):
        return np.mean([cls in files[i] for i in idx])

    # uniform file sampling: class 2 in 5 % of the files, class 4 in 1 %
    assert frac_with(2, uniform) < 0.08 and frac_with(4, uniform) < 0.03
    # balanced: each of the 4 present classes is drawn about a quarter of the time
    assert 0.2 < frac_with(2, draws) < 0.35
    assert 0.2 < frac_with(4, draws) < 0.35
    # class 1: drawn itself (~1/4) plus half of the class-0 draws (class-2/4 files are odd: no class 1)
    assert 0.3 < frac_with(1, draws) < 0.45
    # each class cycles through its own files: both class-4 files are used, equally often
    c4 = [i for i in draws if i in (5, 77)]
    assert abs(c4.count(5) - c4.count(77)) <= 1


def test_class_balanced_is_deterministic_and_shardable():
    files = skewed_index()
    a = take(ClassBalancedSampler(files, 6, seed=4, block=100), 300)
    assert a == take(ClassBalancedSampler(files, 6, seed=4, block=100), 300)
    assert a != take(ClassBalancedSampler(files, 6, seed=5, block=100), 300)
    r0 = take(ClassBalancedSampler(files, 6, seed=4, block=100, rank=0, world_size=2), 150)
    r1 = take(ClassBalancedSampler(files, 6, seed=4, block=100, rank=1, world_size=2), 150)
    assert r0 == a[0::2] and r1 == a[1::2]
    resumed = take(ClassBalancedSampler(files, 6, seed=4, block=100, start=37), 100)
    assert resumed == a[37:137]


# ----------------------------------------------------------------------------- class index ---
def test_load_class_index_formats(tmp_path):
    names = ["b.png", "sub/a.png"]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"num_classes": 19, "dataset": "gta5_train",
                                   "files": {"a.png": [1, 2], "b.png": [0]}}))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"sub/a.png": [3], "a.png": [9], "b.png": [4, 5]}))
    gz = tmp_path / "plain.json.gz"
    with gzip.open(gz, "wt") as f:
        json.dump({"a.png": [7], "b.png": []}, f)
    assert load_class_index(str(wrapped), names) == [[0], [1, 2]]  # matched on base name
    assert load_class_index(str(plain), names) == [[4, 5], [3]]  # relative path first
    assert load_class_index(str(gz), names) == [[], [7]]
    with pytest.raises(KeyError, match="c.png"):
        load_class_index(str(plain), ["c.png"])
    with pytest.raises(FileNotFoundError, match="none.json"):
        load_class_index(str(tmp_path / "none.json"), names)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        load_class_index(str(bad), names)


def test_released_gta5_label_info_builds_a_sampler(shared_fixtures):
    path = os.path.join(shared_fixtures, "spcl_label_info", "gta5_file_to_trainids.json.gz")
    names = [f"{i:05d}.png" for i in range(1, 24967)]
    file_classes = load_class_index(path, names)
    assert len(file_classes) == 24966
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    assert file_classes[0] == raw["00001.png"] == [0, 2, 3, 4, 5, 8, 9, 10, 11, 14]
    s = ClassBalancedSampler(file_classes, 19, seed=0)
    assert s.present.all()
    draws = [i for i, _ in take(s, 1900)]
    present = np.zeros(19)
    for i in draws:
        present[file_classes[i]] += 1
    assert (present > 0).all()
    # the rarest class (fewest files) is in far more drawn files than its share of the set
    counts = np.bincount([c for cl in file_classes for c in cl], minlength=19)
    rare = int(counts.argmin())
    assert present[rare] / len(draws) > 3 * counts[rare] / len(file_classes)


def test_released_synthia_label_info_is_16_class(shared_fixtures):
    path = os.path.join(shared_fixtures, "spcl_label_info", "synthia_file_to_trainids16.json.gz")
    with gzip.open(path, "rt") as f:
        names = sorted(json.load(f))
    assert len(names) == 9400
    file_classes = load_class_index(path, names)
    assert max(max(c) for c in file_classes if c) <= 15
    ClassBalancedSampler(file_classes, 16)


# ------------------------------------------------------------------------------ the loader ---
def test_class_balanced_loader_builds_its_index(tmp_path):
    root = tmp_path / "data"
    os.makedirs(root / "gta5" / "images")
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(6):
        name = f"{i + 1:05d}.png"
        Image.fromarray(rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)).save(root / "gta5" / "images" / name)
        ids = rng.choice([7, 8, 26, 0] if i else [33, 0], size=(4, 8)).astype(np.uint8)
        write_label_png(str(root / "gta5" / "labels" / name), ids)
        truth[name] = sorted(int(c) for c in np.unique(labelid_to_trainid_lut(19)[ids]) if c != 255)
    index = tmp_path / "index.json"
    cfg = load_config("", ["DATASETS.DATA_DIR", str(root), "DATASETS.CLASS_INDEX", str(index),
                           "DATASETS.CLASS_BALANCE", "True", "DATALOADER.NUM_WORKERS", "0",
                           "INPUT.SOURCE_SIZE", "[8, 4]", "INPUT.SOURCE_JITTER", "False"])
    ds = build_dataset(cfg, "gta5_train", train=True)
    loader = build_train_loader(cfg, ds, global_batch=2, class_balanced=True)
    with open(index) as f:
        data = json.load(f)
    assert data["num_classes"] == 19 and data["dataset"] == "gta5_train" and data["files"] == truth
    batches = list(itertools.islice(iter(loader), 20))
    names = [n for b in batches for n in b["name"]]
    assert batches[0]["image"].shape == (2, 3, 4, 8)
    # bicycle (18) is in one file of six; drawn about a quarter of the time (classes 0, 1, 13, 18)
    assert 0.12 < names.count("00001.png") / len(names) < 0.45
    # resuming at iteration 5 continues the same stream
    again = build_train_loader(cfg, ds, global_batch=2, start_iter=5, class_balanced=True)
    resumed = [n for b in itertools.islice(iter(again), 15) for n in b["name"]]
    assert resumed == names[10:]
    # the same index under a 16-class run is refused, not read as other classes
    cfg16 = load_config("", ["DATASETS.DATA_DIR", str(root), "DATASETS.CLASS_INDEX", str(index),
                             "DATASETS.CLASS_BALANCE", "True", "DATALOADER.NUM_WORKERS", "0", "MODEL.NUM_CLASSES", "16",
                             "INPUT.SOURCE_SIZE", "[8, 4]", "INPUT.SOURCE_JITTER", "False"])
    with pytest.raises(ValueError, match="was built for 19 classes, and this run has MODEL.NUM_CLASSES 16"):
        build_train_loader(cfg16, build_dataset(cfg16, "gta5_train", train=True), global_batch=2, class_balanced=True)


def test_prepare_data_tool_writes_the_index(tmp_path):
    import importlib.util

    from conftest import restored_spcl_logger

    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    truth = {}
    base = root / "synthia" / "RAND_CITYSCAPES"
    os.makedirs(base / "RGB")
    os.makedirs(base / "GT" / "LABELS")
    from conftest import write_png16
    from spcl.data.labels import synthia_to_trainid_lut

    for i in range(3):
        name = f"{i:07d}.png"
        Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(base / "RGB" / name)
        ids = rng.choice([0, 1, 3, 8, 12, 22], size=(4, 6)).astype(np.uint16)
        write_png16(str(base / "GT" / "LABELS" / name), np.stack([ids, ids + 300, ids], -1))
        truth[name] = sorted(int(c) for c in np.unique(synthia_to_trainid_lut(16)[ids]) if c != 255)
    spec = importlib.util.spec_from_file_location(
        "spcl_tools_prepare_data", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "prepare_data.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "out" / "synthia_index.json"
    opts = ["--output", str(out), "DATASETS.DATA_DIR", str(root), "DATASETS.SOURCE", "synthia_train",
            "MODEL.NUM_CLASSES", "16", "OUTPUT_DIR", str(tmp_path / "log")]
    with restored_spcl_logger():
        tool.main(opts)
    with open(out) as f:
        data = json.load(f)
    assert data == {"num_classes": 16, "dataset": "synthia_train", "files": truth}
    assert load_class_index(str(out), sorted(truth)) == [truth[n] for n in sorted(truth)]
    # the source set also as the test set, each with its list: the index is of the source list's files
    lists = {}
    for role, chosen in (("SOURCE", ["0000000.png", "0000002.png"]), ("TEST", ["0000001.png"])):
        lists[role] = str(tmp_path / f"{role}.txt")
        with open(lists[role], "w") as f:
            f.writelines(n + "\n" for n in chosen)
    with restored_spcl_logger():
        tool.main(opts + ["DATASETS.TEST", "synthia_train", "DATASETS.SOURCE_LIST", lists["SOURCE"],
                          "DATASETS.TEST_LIST", lists["TEST"]])
    with open(out) as f:
        assert sorted(json.load(f)["files"]) == ["0000000.png", "0000002.png"]


def test_class_balanced_counts_every_class_of_the_drawn_file():
    """The released rule (`core/datasets/gta5.py`: cur_class_dist[file_to_label[c_file]] += 1): a draw
    adds 1 to each class present in the drawn file, whichever class was drawn."""
    s = ClassBalancedSampler([[0, 2, 4, 255], [1], [2, 2]], num_classes=5)
    counts = np.zeros(5)
    s.count_draw(counts, 0)
    assert counts.tolist() == [1, 0, 1, 0, 1]
    s.count_draw(counts, 2)
    assert counts.tolist() == [1, 0, 2, 0, 1]


def test_class_balanced_stream_follows_the_released_counts():
    """Replaying the stream: before each draw the sampler's probabilities are those of the counts of
    every class in the files drawn so far in the block (checked by recomputing them from the draws)."""
    files = skewed_index()
    s = ClassBalancedSampler(files, num_classes=6, seed=3, block=40)
    draws = [i for i, _ in take(s, 120)]
    rng = np.random.default_rng(3)
    orders = [list(rng.permutation(f)) if f else [] for f in s.class_files]
    pointers, counts = [0] * 6, np.zeros(6)
    for n, index in enumerate(draws):
        if n % 40 == 0:
            counts[:] = 0
        k = int(rng.choice(6, p=s.class_probabilities(counts)))
        if pointers[k] >= len(orders[k]):
            orders[k], pointers[k] = list(rng.permutation(s.class_files[k])), 0
        assert orders[k][pointers[k]] == index
        pointers[k] += 1
        for c in set(files[index]):
            if 0 <= c < 6:
                counts[c] += 1


def test_a_class_index_of_another_class_setting_is_refused(tmp_path):
    """A 19-class index read by a 16-class run names other classes (train label 15 is bus in one and bicycle
    in the other; 16-18 do not exist): refused, by its recorded class count or by a label it holds."""
    names = ["a.png", "b.png"]
    built = tmp_path / "built.json"
    built.write_text(json.dumps({"num_classes": 19, "dataset": "gta5_train", "files": {"a.png": [1], "b.png": [0]}}))
    assert load_class_index(str(built), names, 19) == [[1], [0]]
    with pytest.raises(ValueError, match=r"built\.json was built for 19 classes, and this run has "
                                         r"MODEL\.NUM_CLASSES 16: delete it"):
        load_class_index(str(built), names, 16)
    released = tmp_path / "released.json"  # the released label info records no class count
    released.write_text(json.dumps({"a.png": [0, 15], "b.png": [18]}))
    assert load_class_index(str(released), names, 19) == [[0, 15], [18]]
    with pytest.raises(ValueError, match=r"released\.json holds train label 18, and this run has "
                                         r"MODEL\.NUM_CLASSES 16"):
        load_class_index(str(released), names, 16)


# ---------------------------------------------------------------------------- the class index ---
def test_the_class_index_is_keyed_by_image_names_when_labels_are_named_otherwise(tmp_path):
    """build_class_index keys each file's classes by the image's base name ("{image base name: ...}"), which is what
    the loader looks up (`load_class_index` with the images' names); Cityscapes labels are named otherwise
    (`*_gtFine_labelIds.png`), so a key from the label file would not be found."""
    from spcl.data.class_index import build_class_index
    from test_datasets import CITY_NAMES, cfg_for, make_cityscapes

    files = make_cityscapes(tmp_path, "val", CITY_NAMES)
    ds = build_dataset(cfg_for(tmp_path), "cityscapes_val", train=False)
    lut = labelid_to_trainid_lut(19)
    expected = {os.path.basename(n): sorted(int(c) for c in np.unique(lut[ids]) if c != 255)
                for n, (_, ids) in files.items()}
    index = build_class_index(ds, progress=False)
    assert index == expected
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"num_classes": 19, "files": index}))
    names = [os.path.basename(p) for p, _ in ds.items]
    assert load_class_index(str(path), names, 19) == [expected[n] for n in names]


class _Labels:
    """A dataset of two one-pixel label files (train labels 0 and 3) that counts its label reads."""

    items = [("a.png", "a_label.png"), ("b.png", "b_label.png")]

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return len(self.items)

    def load_label(self, path):
        self.reads += 1
        return np.array([[0 if path.startswith("a") else 3]], dtype=np.uint8)


@pytest.mark.parametrize("main", [True, False])
def test_the_main_process_writes_the_class_index_and_every_process_waits_for_it(tmp_path, monkeypatch, main):
    """In a multi-process run the main process alone reads the labels and writes the index; every process then
    meets the others at a barrier before returning (the loader reads the index on every process next,
    spcl/data/build.py `build_train_loader`), so the file exists when the barrier is reached. The processes are
    stood in for by `comm`'s answers."""
    from spcl.data import class_index
    from spcl.utils import comm

    path, barriers = str(tmp_path / "index.json"), []
    monkeypatch.setattr(comm, "is_main_process", lambda: main)
    monkeypatch.setattr(comm, "synchronize", lambda: barriers.append(os.path.isfile(path)))
    ds = _Labels()
    assert class_index.write_class_index(ds, path, 19, "two", progress=False) == path
    assert barriers == [main]  # one barrier; the main process has written the file by then
    assert ds.reads == (2 if main else 0)
    if main:
        with open(path) as f:
            assert json.load(f) == {"num_classes": 19, "dataset": "two", "files": {"a.png": [0], "b.png": [3]}}


def test_source_and_target_loaders_draw_distinct_shuffled_orders(tmp_path):
    """The train loader's stream is shuffled (each epoch a permutation of the set, not 0, 1, 2, …), and the source
    and target loaders of one SEED draw distinct orders (docs/method.md "Datasets", random streams: seeded from
    SEED and the stream's name, `spcl/data/build.py` `stream_seed`; the released code uses two independently
    shuffled loaders), so source image i is not always paired with target image i."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    n = 6
    for i in range(n):
        name = f"{i + 1:05d}.png"
        os.makedirs(root / "gta5" / "images", exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)).save(root / "gta5" / "images" / name)
        write_label_png(str(root / "gta5" / "labels" / name), np.full((4, 8), 7, dtype=np.uint8))
    cfg = load_config("", ["DATASETS.DATA_DIR", str(root), "DATALOADER.NUM_WORKERS", "0", "SEED", "3",
                           "INPUT.SOURCE_SIZE", "[8, 4]", "INPUT.SOURCE_JITTER", "False"])
    ds = build_dataset(cfg, "gta5_train", train=True)
    orders = {}
    for stream in ("source", "target"):
        loader = build_train_loader(cfg, ds, global_batch=2, stream=stream)
        orders[stream] = [int(i) for b in itertools.islice(iter(loader), 3 * n // 2) for i in b["index"]]
    for order in orders.values():
        epochs = [order[e * n:(e + 1) * n] for e in range(3)]
        assert all(sorted(e) == list(range(n)) for e in epochs)  # each epoch draws every image once
        assert any(e != list(range(n)) for e in epochs)  # shuffled, not in file order
    assert orders["source"] != orders["target"]
