"""generate_pseudo_labels: one model pass, labels equal to the threshold rule applied to the model's
own softmax maps, thresholds equal to the exact sort, summary written."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.reference import released_thresholds
from spcl.pseudo import generate_pseudo_labels


class CountingModel(torch.nn.Module):
    """Deterministic logits from the input (so the test can recompute them) and a forward counter."""

    def __init__(self, K):
        super().__init__()
        self.K, self.calls = K, 0
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(K, 3, generator=g) * 3

    def forward(self, x):
        self.calls += 1
        logits = torch.einsum("kc,bchw->bkhw", self.proj, x)
        return {"feat": x, "logits": logits}


def _loader(n=5, H=8, W=12):
    g = torch.Generator().manual_seed(1)
    batches = []
    for i in range(n):
        batches.append({"image": torch.randn(1, 3, H, W, generator=g), "label": torch.full((1, H, W), 255),
                        "name": [f"img_{i}_leftImg8bit.png"]})
    return batches


class _Loader(list):
    dataset = None


def test_one_pass_and_labels_follow_the_rule(tmp_path):
    K = 4
    model = CountingModel(K)
    loader = _Loader(_loader())
    summary = generate_pseudo_labels(model, loader, str(tmp_path), K, torch.device("cpu"), cap=0.9)
    assert model.calls == len(loader)  # one model pass over the set
    assert summary["model_passes"] == 1
    probs = torch.cat([torch.softmax(CountingModel(K)(b["image"])["logits"], 1) for b in loader])
    conf, pred = probs.max(1)
    exact = released_thresholds(conf.numpy(), pred.numpy(), K, 0.9)
    assert np.abs(np.array(summary["thresholds"]) - exact).max() < 1e-4
    for i, b in enumerate(loader):
        label = np.array(Image.open(tmp_path / b["name"][0]))
        keep = conf[i] >= torch.tensor(summary["thresholds"])[pred[i]].float()
        expected = torch.where(keep, pred[i], 255).numpy()
        near = (conf[i] - torch.tensor(summary["thresholds"])[pred[i]].float()).abs() < 2e-5
        assert (label[~near.numpy()] == expected[~near.numpy()]).all()
    saved = json.loads((tmp_path / "thresholds.json").read_text())
    assert saved["thresholds"] == summary["thresholds"]
    assert not os.path.exists(tmp_path / ".cache")  # the one-pass cache is cleaned up
    kept = sum((np.array(Image.open(tmp_path / b["name"][0])) != 255).sum() for b in loader)
    assert summary["kept_fraction"] == kept / (len(loader) * 8 * 12)


def test_two_pass_mode_gives_the_same_labels(tmp_path):
    K = 3
    one, two = tmp_path / "one", tmp_path / "two"
    generate_pseudo_labels(CountingModel(K), _Loader(_loader(3)), str(one), K, torch.device("cpu"))
    model = CountingModel(K)
    s = generate_pseudo_labels(model, _Loader(_loader(3)), str(two), K, torch.device("cpu"), cache=False)
    assert model.calls == 6 and s["model_passes"] == 2
    for i in range(3):
        name = f"img_{i}_leftImg8bit.png"
        assert (np.array(Image.open(one / name)) == np.array(Image.open(two / name))).all()


def test_labelled_correctly_counts_dropped_pixels_against_the_class(tmp_path):
    """labelled_correctly[c] = pixels with gt c and pseudo label c / all pixels with gt c (kept or
    dropped, 255 in gt left out), and confusion_on_kept_pixels[t][l] = kept pixels with gt t labelled
    l, both recomputed here from the written PNGs."""
    from spcl.evaluation import SemSegEvaluator

    K, H, W = 3, 8, 12
    g = torch.Generator().manual_seed(2)
    batches = _loader(4, H, W)
    for b in batches:  # ground truth: random classes with a few ignored pixels
        gt = torch.randint(0, K, (1, H, W), generator=g)
        gt[:, 0, :3] = 255
        b["label"] = gt
    summary = generate_pseudo_labels(CountingModel(K), _Loader(batches), str(tmp_path), K, torch.device("cpu"),
                                     quality=SemSegEvaluator(K))
    correct, total = np.zeros(K), np.zeros(K)
    confusion = np.zeros((K, K), dtype=np.int64)
    for b in batches:
        label = np.array(Image.open(tmp_path / b["name"][0]))
        gt = b["label"][0].numpy()
        for c in range(K):
            total[c] += (gt == c).sum()
            correct[c] += ((gt == c) & (label == c)).sum()
            for l in range(K):
                confusion[c, l] += ((gt == c) & (label == l)).sum()
    assert np.allclose(summary["labelled_correctly"], 100 * correct / total)
    assert summary["confusion_on_kept_pixels"] == confusion.tolist()
    assert (confusion - np.diag(np.diag(confusion))).sum() > 0  # the check sees wrong labels, not only right ones


def _labelled_batches(K, H, W, n=4):
    g = torch.Generator().manual_seed(3)
    batches = _loader(n, H, W)
    for b in batches:
        gt = torch.randint(0, K, (1, H, W), generator=g)
        gt[:, 0, :3] = 255
        b["label"] = gt
    return batches


def test_oracle_labels_put_ground_truth_on_the_kept_pixels_or_everywhere(tmp_path):
    """PSEUDO.ORACLE (a diagnostic): "kept" = ground truth where the ordinary run keeps a pixel, 255
    where it drops one; "all" = ground truth everywhere. Checked against an ordinary run's PNGs, in both
    the one-pass and the two-pass mode."""
    K, H, W = 3, 8, 12
    batches = _labelled_batches(K, H, W)
    ref = generate_pseudo_labels(CountingModel(K), _Loader(batches), str(tmp_path / "plain"), K,
                                 torch.device("cpu"))
    for cache in (True, False):
        for oracle in ("kept", "all"):
            out = tmp_path / f"{oracle}_{cache}"
            s = generate_pseudo_labels(CountingModel(K), _Loader(batches), str(out), K, torch.device("cpu"),
                                       cache=cache, oracle=oracle)
            assert s["kept_fraction"] == ref["kept_fraction"]  # still the thresholds' statistic
            assert s["oracle"] == oracle and "oracle" not in ref
            files = []
            for b in batches:
                name = b["name"][0]
                plain = np.array(Image.open(tmp_path / "plain" / name))
                gt = b["label"][0].numpy()
                expected = gt if oracle == "all" else np.where(plain != 255, gt, 255)
                files.append(np.array(Image.open(out / name)))
                assert (files[-1] == expected).all(), (oracle, cache, name)
            # the share of labelled pixels is the written files' (kept ∩ labelled ground truth, or all labelled)
            assert s["labelled_fraction"] == np.mean(np.concatenate([f.ravel() for f in files]) != 255)
            assert s["labelled_fraction"] != ref["kept_fraction"]
    plain_files = [np.array(Image.open(tmp_path / "plain" / b["name"][0])) for b in batches]
    assert ref["labelled_fraction"] == ref["kept_fraction"] == np.mean(np.concatenate(plain_files) != 255)
    assert ((plain != 255) & (plain != gt)).any() and (plain == 255).any()  # the check can tell them apart


def test_oracle_labels_need_ground_truth(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="img_0_leftImg8bit.png has no ground truth"):
        generate_pseudo_labels(CountingModel(3), _Loader(_loader(2)), str(tmp_path), 3, torch.device("cpu"),
                               oracle="kept")


def _generate_on_a_shard(root, shards, summary_path):
    """One process of a multi-process label run: its own shard of the images, one shared output folder."""
    from spcl.utils import comm

    batches = _loader(sum(shards))
    start = sum(shards[:comm.get_rank()])
    mine = _Loader(batches[start:start + shards[comm.get_rank()]])
    summary = generate_pseudo_labels(CountingModel(4), mine, root, 4, torch.device("cpu"))
    torch.save(summary, summary_path.format(rank=comm.get_rank()))


def test_several_processes_write_the_labels_of_one_process(tmp_path):
    """Each process caches its own shard and writes its labels: together the labels and summary of one process
    over all images (thresholds from the summed histograms), and no process removes a cache another still
    reads. Uneven shards (1 and 7 images): the process with one image finishes first."""
    from spcl.engine import launch

    single, multi = tmp_path / "single", tmp_path / "multi"
    one = generate_pseudo_labels(CountingModel(4), _Loader(_loader(8)), str(single), 4, torch.device("cpu"))
    result = str(tmp_path / "summary{rank}.pt")
    launch(_generate_on_a_shard, num_processes=2, args=(str(multi), [1, 7], result), backend="gloo")
    for rank in (0, 1):
        summary = torch.load(result.format(rank=rank))
        assert summary["thresholds"] == one["thresholds"]
        assert summary["kept_fraction"] == pytest.approx(one["kept_fraction"], abs=1e-12)
        assert summary["num_images"] == 8
    assert sorted(os.listdir(multi)) == sorted(os.listdir(single))  # the labels, thresholds.json, no .cache
    for name in os.listdir(single):
        if name.endswith(".png"):
            assert (np.array(Image.open(multi / name)) == np.array(Image.open(single / name))).all(), name


class Killed(Exception):
    """Stands for a kill: the run ends in the middle of its model pass."""


class DyingModel(CountingModel):
    """CountingModel that ends the run at its forward call number `at` (1-based)."""

    def __init__(self, K, at):
        super().__init__(K)
        self.at = at

    def forward(self, x):
        if self.calls + 1 == self.at:
            raise Killed
        return super().forward(x)


def _outputs(folder):
    """The bytes of every file the run leaves in `folder` (labels, thresholds.json), by name."""
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def _resumed(tmp_path, first_key, second_key, tear=None):
    """Interrupt a run at its 4th batch (of 6, with ground truth), optionally tear one cached file, rerun;
    returns (model calls of the rerun, its summary, its files, an uninterrupted run's summary and files)."""
    from spcl.evaluation import SemSegEvaluator

    K, cpu = 4, torch.device("cpu")
    batches = _labelled_batches(K, 8, 12, n=6)
    ref = generate_pseudo_labels(CountingModel(K), _Loader(batches), str(tmp_path / "ref"), K, cpu,
                                 quality=SemSegEvaluator(K))
    out = tmp_path / "run"
    with pytest.raises(Killed):
        generate_pseudo_labels(DyingModel(K, at=4), _Loader(batches), str(out), K, cpu, quality=SemSegEvaluator(K),
                               resume_key=first_key)
    if tear is not None:
        path = out / ".cache" / "rank0" / (batches[tear]["name"][0] + ".npz")
        path.write_bytes(path.read_bytes()[:40])
    rerun = CountingModel(K)
    summary = generate_pseudo_labels(rerun, _Loader(batches), str(out), K, cpu, quality=SemSegEvaluator(K),
                                     resume_key=second_key)
    return rerun.calls, summary, _outputs(out), ref, _outputs(tmp_path / "ref")


KEY = {"config": "MODEL:\n  BACKBONE: resnet18\n", "weights": ["/w/model_final.pth", 123, 456], "processes": 1}


def test_a_rerun_with_the_same_key_predicts_only_what_the_interrupted_run_had_not(tmp_path):
    """3 of 6 images were predicted before the kill: the rerun runs the model on the other 3, and its labels,
    thresholds and quality are byte for byte those of an uninterrupted run; the cache is gone afterwards."""
    calls, summary, files, ref, ref_files = _resumed(tmp_path, KEY, dict(KEY))
    assert calls == 3
    assert summary == ref and files == ref_files
    assert "quality_on_kept_pixels" in summary  # the cached ground truth came back too


@pytest.mark.parametrize("changed", ["weights", "config", "processes"])
def test_a_rerun_with_another_key_predicts_everything_again(tmp_path, changed):
    """Another model file, config or number of processes: the interrupted run's predictions are not this one's."""
    other = dict(KEY, **{changed: "other"})
    calls, summary, files, ref, ref_files = _resumed(tmp_path, KEY, other)
    assert calls == 6 and summary == ref and files == ref_files


def test_without_a_key_nothing_is_reused(tmp_path):
    calls, summary, files, ref, ref_files = _resumed(tmp_path, None, None)
    assert calls == 6 and summary == ref and files == ref_files


def test_a_torn_cache_file_is_predicted_again(tmp_path):
    """A cached file cut short (a kill during a write of an older version, a full disk) is predicted again
    with its batch; the others are reused."""
    calls, summary, files, ref, ref_files = _resumed(tmp_path, KEY, KEY, tear=1)
    assert calls == 4 and summary == ref and files == ref_files


def test_the_stage_key_follows_the_weights_file_the_config_and_the_processes(tmp_path, monkeypatch):
    from spcl.config import load_config
    from spcl.engine.stages.offline import resume_key
    from spcl.utils import comm

    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"0" * 10)
    toy = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                       "toy.yaml")
    cfg = load_config(toy, ["MODEL.WEIGHTS", str(weights)])
    key = resume_key(cfg)
    assert resume_key(load_config(toy, ["MODEL.WEIGHTS", str(weights)])) == key
    assert resume_key(load_config(toy, ["MODEL.WEIGHTS", str(weights), "TEST.FLIP", "True"])) != key
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    assert resume_key(cfg) != key
    monkeypatch.undo()
    weights.write_bytes(b"1" * 10)  # the model file replaced by one of the same size (a new training run)
    os.utime(weights, ns=(0, os.stat(weights).st_mtime_ns + 10**9))
    assert resume_key(cfg) != key


def test_the_stage_key_tells_apart_weights_files_of_one_time_by_their_place_and_size(tmp_path, monkeypatch):
    """resume_key: two weights files with one modification time (copies that kept it, `cp -p`) differ in the key
    by their size, and a relative MODEL.WEIGHTS names the file of the current folder (absolute path)."""
    from spcl.config import load_config
    from spcl.engine.stages.offline import resume_key

    toy = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                       "toy.yaml")
    keys = []
    for folder, size in (("a", 10), ("b", 10), ("a", 11)):  # b: a copy; then a's file replaced by a longer one
        os.makedirs(tmp_path / folder, exist_ok=True)
        (tmp_path / folder / "model.pth").write_bytes(b"0" * size)
        os.utime(tmp_path / folder / "model.pth", ns=(10**18, 10**18))
        monkeypatch.chdir(tmp_path / folder)
        keys.append(resume_key(load_config(toy, ["MODEL.WEIGHTS", "model.pth"])))
    assert keys[0] != keys[1] and keys[0] != keys[2]
    assert keys[0]["config"] == keys[1]["config"] == keys[2]["config"]


class LopsidedModel(CountingModel):
    """CountingModel plus a left-to-right ramp on class 0's logit: its predictions change when the input is
    mirrored, so averaging with the flipped input (TEST.FLIP) shows in the thresholds and labels."""

    def forward(self, x):
        out = super().forward(x)
        ramp = torch.linspace(-4.0, 4.0, x.shape[-1])
        out["logits"] = out["logits"] + torch.nn.functional.pad(ramp.expand(1, 1, *x.shape[-2:]),
                                                                (0, 0, 0, 0, 0, self.K - 1))
        return out


def test_flip_averages_the_softmax_with_that_of_the_mirrored_input(tmp_path):
    """flip=True: confidence and class come from (softmax(m(x)) + mirror(softmax(m(mirror(x))))) / 2 (the test
    protocol's flip, docs/method.md "Evaluation"), recomputed here by hand; the plain run's thresholds differ."""
    K = 3
    loader = _Loader(_loader(3))
    summary = generate_pseudo_labels(LopsidedModel(K), loader, str(tmp_path), K, torch.device("cpu"), flip=True)
    m = LopsidedModel(K)

    def softmax(x):
        return torch.softmax(m(x)["logits"], 1)

    images = torch.cat([b["image"] for b in loader])
    averaged = (softmax(images) + softmax(images.flip(3)).flip(3)) / 2
    conf, pred = averaged.max(1)
    exact = released_thresholds(conf.numpy(), pred.numpy(), K, 0.9)
    assert np.abs(np.array(summary["thresholds"]) - exact).max() < 1e-4
    plain_conf, plain_pred = softmax(images).max(1)
    assert np.abs(released_thresholds(plain_conf.numpy(), plain_pred.numpy(), K, 0.9) - exact).max() > 1e-3
    for i, b in enumerate(loader):
        label = np.array(Image.open(tmp_path / b["name"][0]))
        t = torch.tensor(summary["thresholds"])[pred[i]].float()
        expected = torch.where(conf[i] >= t, pred[i], 255).numpy()
        far = ((conf[i] - t).abs() >= 2e-5).numpy()
        assert (label[far] == expected[far]).all()


def test_kept_fraction_per_class_is_kept_over_predicted_pixels_of_that_class(tmp_path):
    """kept_fraction_per_class[c] = pixels labelled c in the PNGs / pixels predicted c (docs/method.md "Pseudo
    labels": the share of pixels kept per class), recomputed from the written files and the model's argmax."""
    K = 4
    loader = _Loader(_loader())
    summary = generate_pseudo_labels(CountingModel(K), loader, str(tmp_path), K, torch.device("cpu"))
    pred = torch.cat([CountingModel(K)(b["image"])["logits"] for b in loader]).argmax(1).numpy()
    labels = np.stack([np.array(Image.open(tmp_path / b["name"][0])) for b in loader])
    expected = [(labels == c).sum() / max((pred == c).sum(), 1) for c in range(K)]
    assert summary["kept_fraction_per_class"] == pytest.approx(expected, abs=1e-12)
    assert len({round(f, 6) for f in expected}) > 1  # classes kept at different rates: the check can tell


def test_a_class_without_ground_truth_is_nan_in_labelled_correctly_not_zero(tmp_path):
    """labelled_correctly[c] divides by the ground-truth pixels of c: a class absent from the ground truth has no
    share (NaN), unlike a class present and never labelled right (0), which the stage reports as unlearnable."""
    from spcl.evaluation import SemSegEvaluator

    K = 3
    batches = _labelled_batches(K, 8, 12)
    for b in batches:
        b["label"] = torch.where(b["label"] == 2, 1, b["label"])  # no pixel of class 2 in the ground truth
    summary = generate_pseudo_labels(CountingModel(K), _Loader(batches), str(tmp_path), K, torch.device("cpu"),
                                     quality=SemSegEvaluator(K))
    share = summary["labelled_correctly"]
    assert np.isnan(share[2]) and not np.isnan(share[0]) and not np.isnan(share[1])


def test_ground_truth_larger_than_the_input_is_resized_to_the_labels(tmp_path):
    """The test transforms resize the image to INPUT.TEST_SIZE and leave the label at its own size
    (docs/method.md "Pseudo labels": labels at the resolution the model saw): ground truth at twice the input's
    size (each pixel a 2×2 block) is resized (nearest) to the labels, so the quality equals that of ground truth
    at the input's size."""
    from spcl.evaluation import SemSegEvaluator

    K = 3
    small = _labelled_batches(K, 8, 12)
    big = [dict(b, label=b["label"].repeat_interleave(2, 1).repeat_interleave(2, 2)) for b in small]
    assert big[0]["label"].shape == (1, 16, 24)
    ref = generate_pseudo_labels(CountingModel(K), _Loader(small), str(tmp_path / "small"), K, torch.device("cpu"),
                                 quality=SemSegEvaluator(K))
    for cache in (True, False):
        s = generate_pseudo_labels(CountingModel(K), _Loader(big), str(tmp_path / f"big_{cache}"), K,
                                   torch.device("cpu"), quality=SemSegEvaluator(K), cache=cache)
        for key in ("labelled_correctly", "confusion_on_kept_pixels", "thresholds", "quality_on_kept_pixels"):
            assert s[key] == ref[key], (key, cache)


def test_the_two_pass_mode_leaves_no_cache_folder(tmp_path):
    """cache=False runs the model twice and caches nothing: the output folder holds the labels and thresholds.json
    only, as after a one-pass run."""
    K = 3
    loader = _Loader(_loader(2))
    generate_pseudo_labels(CountingModel(K), loader, str(tmp_path), K, torch.device("cpu"), cache=False,
                           resume_key=KEY)
    assert sorted(os.listdir(tmp_path)) == sorted([b["name"][0] for b in loader] + ["thresholds.json"])
