"""A resumed pseudo-label pass reads only the images of the batches it has still to predict (`ImageBatches`),
and writes the labels and thresholds.json of an uninterrupted pass, byte for byte."""
import os

import pytest
import torch

from spcl.pseudo import ImageBatches, generate_pseudo_labels

from conftest import hide_gpu, tiny_cfg
from test_pseudo_generation import KEY, CountingModel, DyingModel, Killed, _labelled_batches, _outputs


def _image_batches(batches, size, loaded):
    """`batches` (one image each) regrouped `size` to a batch, as ImageBatches whose `load` records the
    numbers it is asked for in `loaded`."""
    grouped = []
    for start in range(0, len(batches), size):
        part = batches[start:start + size]
        grouped.append({"image": torch.cat([b["image"] for b in part]), "label": torch.cat([b["label"] for b in part]),
                        "name": [b["name"][0] for b in part]})

    def load(numbers):
        loaded.append(list(numbers))
        return [grouped[b] for b in numbers]

    return ImageBatches([g["name"] for g in grouped], load)


@pytest.mark.parametrize("tear", [None, 2])
def test_a_resumed_pass_loads_only_the_batches_not_cached(tmp_path, tear):
    """6 images in batches of 2, killed at the 3rd forward (batches 0 and 1 cached): the rerun loads batch 2 only,
    or, with one file of batch 1 torn, batches 1 and 2; labels, thresholds and quality are an uninterrupted run's."""
    from spcl.evaluation import SemSegEvaluator

    K, cpu = 4, torch.device("cpu")
    batches = _labelled_batches(K, 8, 12, n=6)
    ref = generate_pseudo_labels(CountingModel(K), _image_batches(batches, 2, []), str(tmp_path / "ref"), K, cpu,
                                 quality=SemSegEvaluator(K))
    out = tmp_path / "run"
    with pytest.raises(Killed):
        generate_pseudo_labels(DyingModel(K, at=3), _image_batches(batches, 2, []), str(out), K, cpu,
                               quality=SemSegEvaluator(K), resume_key=KEY)
    if tear is not None:
        path = out / ".cache" / "rank0" / (batches[tear]["name"][0] + ".npz")
        path.write_bytes(path.read_bytes()[:40])
    loaded, model = [], CountingModel(K)
    summary = generate_pseudo_labels(model, _image_batches(batches, 2, loaded), str(out), K, cpu,
                                     quality=SemSegEvaluator(K), resume_key=KEY)
    assert loaded == ([[2]] if tear is None else [[1, 2]])
    assert model.calls == len(loaded[0])
    assert summary == ref and _outputs(out) == _outputs(tmp_path / "ref")
    assert summary["num_images"] == 6


def _run_killed_at_batch_2(tmp_path, K):
    """The labelled batches of a run into `tmp_path` that a kill stopped at its batch 2 (a rerun resumes it)."""
    batches = _labelled_batches(K, 8, 12, n=4)
    with pytest.raises(Killed):
        generate_pseudo_labels(DyingModel(K, at=2), _image_batches(batches, 1, []), str(tmp_path), K,
                               torch.device("cpu"), resume_key=KEY)
    return batches


def test_a_load_that_gives_other_images_is_an_error(tmp_path):
    """`ImageBatches.load` must give the batches it was asked for: other images would be labelled under the names
    of the cached ones."""
    K, cpu = 4, torch.device("cpu")
    batches = _run_killed_at_batch_2(tmp_path, K)
    wrong = _image_batches(batches, 1, [])
    shifted = ImageBatches(wrong.names, lambda numbers: wrong.load([n - 1 for n in numbers]))
    with pytest.raises(RuntimeError, match=r"gave a batch of \['img_0_leftImg8bit.png'\]; expected "
                                           r"\['img_1_leftImg8bit.png'\]"):
        generate_pseudo_labels(CountingModel(K), shifted, str(tmp_path), K, cpu, resume_key=KEY)


def test_a_load_that_gives_fewer_batches_than_asked_is_an_error(tmp_path):
    """`ImageBatches.load` must give every batch it was asked for: a load that stops early (the last batch missing)
    is named with both counts, not left to fail later on a cache file that was never written."""
    K, cpu = 4, torch.device("cpu")
    batches = _run_killed_at_batch_2(tmp_path, K)
    whole = _image_batches(batches, 1, [])
    short = ImageBatches(whole.names, lambda numbers: whole.load(numbers)[:-1])
    with pytest.raises(RuntimeError, match=r"gave 2 batch\(es\); expected 3"):
        generate_pseudo_labels(CountingModel(K), short, str(tmp_path), K, cpu, resume_key=KEY)


FOLDER_TARGET = ("DATASETS.TARGET", "folder_train", "DATASETS.FOLDER.TRAIN_DIR", "{root}/cityscapes/leftImg8bit/train")


@pytest.mark.parametrize("target", [(), FOLDER_TARGET], ids=["cityscapes", "folder"])
def test_the_stage_rerun_reads_only_the_images_still_to_predict(toy_root, random_checkpoint, tmp_path, monkeypatch,
                                                                 target):
    """The pseudo_labels stage killed at its 2nd forward (batches of 2: 2 of the 8 target images cached): the
    rerun decodes the other 6 images only, and its labels and thresholds.json equal an uninterrupted run's.
    Also with a folder target, whose items are named by their path (`city__x.png`), not their file name."""
    import spcl.data.datasets.base as base
    import spcl.pseudo.generate as generate
    from spcl.engine.stages.pseudo_labels import PseudoLabelsStage

    def run(out):
        cfg = tiny_cfg(toy_root, out, "MODEL.WEIGHTS", random_checkpoint, "TEST.BATCH_SIZE", "2", "DATASETS.PREFLIGHT",
                       "False", *[v.format(root=toy_root) for v in target])
        with hide_gpu():
            PseudoLabelsStage(cfg, out, torch.device("cpu")).run()

    full, out = str(tmp_path / "full"), str(tmp_path / "run")
    reads, real_read, real_predict = [], base.read_image, generate.predict_probs
    monkeypatch.setattr(base, "read_image", lambda path: reads.append(os.path.basename(path)) or real_read(path))
    run(full)
    every = list(reads)
    assert len(every) == 8

    def dying(*args, **kwargs):
        dying.calls += 1
        if dying.calls == 2:
            raise Killed
        return real_predict(*args, **kwargs)

    dying.calls = 0
    monkeypatch.setattr(generate, "predict_probs", dying)
    with pytest.raises(Killed):
        run(out)
    monkeypatch.setattr(generate, "predict_probs", real_predict)
    reads.clear()
    run(out)
    assert reads == every[2:]  # the first batch came from the cache, unread
    labels = os.path.join(full, "labels")
    names = sorted(os.listdir(labels))
    assert len(names) == 9 and sorted(os.listdir(os.path.join(out, "labels"))) == names  # 8 PNGs, thresholds.json
    for name in names:
        with open(os.path.join(out, "labels", name), "rb") as f, open(os.path.join(labels, name), "rb") as g:
            assert f.read() == g.read(), name


def test_a_resumed_process_loads_the_batches_of_its_own_share(toy_root, tmp_path, monkeypatch):
    """target_batches under two processes (process 1 of 2, faked): the batches its resumed pass loads are those of
    its share of the target set (every other image), not a share of that share."""
    import spcl.utils.comm as comm
    from spcl.data import build_dataset
    from spcl.engine.stages.pseudo_labels import item_name, target_batches

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    cfg = tiny_cfg(toy_root, str(tmp_path), "TEST.BATCH_SIZE", "2")
    dataset = build_dataset(cfg, cfg.DATASETS.TARGET, train=False, role="test", labels="optional", list_for="target")
    batches = target_batches(cfg, dataset)
    mine = [item_name(dataset, i) for i in range(1, len(dataset), 2)]
    assert len(dataset) == 8 and batches.names == [mine[:2], mine[2:]]
    assert [b["name"] for b in batches.load([1])] == [mine[2:]]
