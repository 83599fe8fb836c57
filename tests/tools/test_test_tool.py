"""tools/test.py in-process: a folder of checkpoints → results.csv sorted by iteration (junk files
skipped), and one checkpoint with saved predictions whose metrics equal run_inference's."""
from __future__ import annotations

import csv
import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from conftest import load_tool, restored_spcl_logger
from spcl.config import load_config
from spcl.data import build_dataset, build_test_loader
from spcl.data.labels import colorize, labelid_to_trainid_lut, trainid_to_labelid_lut
from spcl.evaluation import run_inference
from spcl.modeling import predict_probs
from spcl.modeling import build_segmentor, load_segmentor_weights

# On the CPU also where a GPU is present: exact comparisons of the tool's outputs with references
# computed in the test, which only the CPU guarantees (conftest.hide_gpu).
pytestmark = pytest.mark.usefixtures("on_the_cpu")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
W, H = 32, 16
NAMES = ["lindau/lindau_000001_000019_leftImg8bit.png", "frankfurt/frankfurt_000000_000294_leftImg8bit.png",
         "frankfurt/frankfurt_000001_000019_leftImg8bit.png"]


@pytest.fixture
def test_tool():
    """tools/test.py as a module; the `spcl` logger is restored afterwards (setup_logger changes it)."""
    with restored_spcl_logger():
        yield load_tool("test")


def make_val_tree(root):
    rng = np.random.default_rng(0)
    for n in NAMES:
        img_path = os.path.join(root, "cityscapes", "leftImg8bit", "val", n)
        lab_path = os.path.join(root, "cityscapes", "gtFine", "val",
                                n.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
        os.makedirs(os.path.dirname(img_path), exist_ok=True)
        os.makedirs(os.path.dirname(lab_path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img_path)
        Image.fromarray(rng.choice([0, 7, 8, 11, 21, 23, 26], size=(H, W)).astype(np.uint8)).save(lab_path)


def opts_for(root):
    return ["MODEL.BACKBONE", "resnet18", "MODEL.WEIGHTS", "", "DATASETS.DATA_DIR", str(root),
            "INPUT.TEST_SIZE", f"[{W}, {H}]", "DATALOADER.NUM_WORKERS", "0"]


def save_checkpoint(cfg, path, iteration, seed):
    torch.manual_seed(seed)
    model = build_segmentor(cfg, load_weights=False)
    for conv in model.head.convs:  # spread the predictions over several classes
        nn.init.normal_(conv.weight, std=0.05)
        nn.init.normal_(conv.bias, std=1.0)
    torch.save({"model": model.state_dict(), "iteration": iteration}, path)


def reference_metrics(cfg, path):
    model = build_segmentor(cfg, load_weights=False)
    load_segmentor_weights(model, path)
    loader = build_test_loader(cfg, build_dataset(cfg, "cityscapes_val", train=False))
    return run_inference(model, loader, 19, torch.device("cpu")), model


def test_folder_of_checkpoints(tmp_path, test_tool):
    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    late, early = str(ckpts / "a_model.pth"), str(ckpts / "z_model.pth")  # name order ≠ iteration order
    save_checkpoint(cfg, late, 200, seed=1)
    save_checkpoint(cfg, early, 50, seed=2)
    (ckpts / "junk.pth").write_bytes(b"this is not a checkpoint")
    torch.save({"optimizer": {}}, str(ckpts / "no_model.pt"))
    (ckpts / "notes.txt").write_text("ignored")
    test_tool.main(["--checkpoint", str(ckpts)] + opts_for(root))
    evals = [p for p in os.listdir(ckpts) if p.startswith("eval_")]
    assert len(evals) == 1  # default output folder: a new eval_<time> folder
    out = ckpts / evals[0]
    with open(out / "results.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:6] == ["iteration", "checkpoint", "mIoU", "mAcc", "aAcc", "mIoU_tail"] and header[6] == "road"
    assert len(header) == 6 + 19
    assert [int(r[0]) for r in body] == [50, 200]
    assert [r[1] for r in body] == [early, late]
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert set(metrics) == {early, late}
    for row, path in zip(body, (early, late)):
        ref, _ = reference_metrics(cfg, path)
        assert float(row[2]) == pytest.approx(ref["mIoU"], abs=1e-9)
        assert float(row[4]) == pytest.approx(ref["aAcc"], abs=1e-9)
        assert metrics[path]["mIoU"] == pytest.approx(ref["mIoU"], abs=1e-9)
        assert metrics[path]["iteration"] == int(row[0])
    assert (out / "config.yaml").is_file()
    assert not (out / "color").exists()
    os.remove(early)  # a folder with one model (and files that are none) still gets its results.csv
    test_tool.main(["--checkpoint", str(ckpts), "--output", str(tmp_path / "one")] + opts_for(root))
    with open(tmp_path / "one" / "results.csv") as f:
        assert [r[:2] for r in csv.reader(f)][1:] == [["200", late]]
    with open(tmp_path / "one" / "metrics.json") as f:
        assert set(json.load(f)) == {late}  # the folder form, as for several


def test_single_checkpoint_with_saved_predictions(tmp_path, test_tool):
    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root))
    path = str(tmp_path / "model_final.pth")
    save_checkpoint(cfg, path, 7, seed=3)
    out = tmp_path / "eval_out"
    test_tool.main(["--checkpoint", path, "--output", str(out), "--save-color", "--save-labelids"]
                   + opts_for(root))
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert not (out / "results.csv").exists()
    ref, model = reference_metrics(cfg, path)
    assert metrics["iteration"] == 7 and metrics["flip"] is False and metrics["scales"] == [1.0]
    assert metrics["mIoU"] == pytest.approx(ref["mIoU"], abs=1e-9)
    np.testing.assert_allclose(np.array(metrics["IoU"], dtype=float), np.array(ref["IoU"], dtype=float))
    assert metrics["num_pixels"] == ref["num_pixels"] == 3 * W * H - sum(
        int((labelid_to_trainid_lut(19)[np.array(Image.open(os.path.join(
            root, "cityscapes", "gtFine", "val", n.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))))] == 255)
            .sum()) for n in NAMES)
    ds = build_dataset(cfg, "cityscapes_val", train=False)
    lut = trainid_to_labelid_lut(19)
    model.eval()
    seen_classes = set()
    for i in range(len(ds)):
        item = ds[i]
        pred = predict_probs(model, item["image"][None], (H, W)).argmax(1)[0].numpy().astype(np.uint8)
        seen_classes |= set(np.unique(pred).tolist())
        base = item["name"][: -len(".png")]
        stem = base.replace("_leftImg8bit", "")
        color = np.array(Image.open(out / "color" / (stem + "_color.png")))
        np.testing.assert_array_equal(color, colorize(pred, 19))
        ids = np.array(Image.open(out / "labelIds" / (stem + "_labelIds.png")))
        np.testing.assert_array_equal(ids, lut[pred])
    assert len(seen_classes) > 1
    assert sorted(os.listdir(out / "labelIds")) == sorted(
        os.path.basename(n).replace("_leftImg8bit.png", "_labelIds.png") for n in NAMES)


def test_no_checkpoint_raises(tmp_path, test_tool):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "junk.pth").write_bytes(b"junk")
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        test_tool.find_checkpoints(str(empty))
    # a whole run folder: the hint names the last stage's final checkpoint (stage 10 after stage 3, not before;
    # not a stage folder a rerun set aside)
    run = tmp_path / "run"
    for stage in ("3_align", "10_self_train", "11_self_train.stale-20260101-000000"):
        (run / stage / "checkpoints").mkdir(parents=True)
        (run / stage / "checkpoints" / "model_final.pth").write_bytes(b"x")
    last = os.path.join(str(run), "10_self_train", "checkpoints", "model_final.pth")
    with pytest.raises(FileNotFoundError, match=f"is a run folder: give one stage's checkpoint, e.g. the last "
                                                f"stage's {re.escape(last)}$"):
        test_tool.find_checkpoints(str(run))


def test_which_files_of_a_folder_are_evaluated(tmp_path, test_tool, spcl_log):
    """Ours and bare segmentor state dicts (iteration -1) are models; an ImageNet backbone file, which has no
    head, and a pickled list are skipped with the reason."""
    cfg = load_config("", opts_for(tmp_path))
    folder = tmp_path / "ckpts"
    folder.mkdir()
    ours = str(folder / "ours.pth")
    save_checkpoint(cfg, ours, 7, seed=0)
    state = torch.load(ours)["model"]
    bare = str(folder / "bare.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, bare)
    torch.save({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")},
               str(folder / "imagenet.pth"))
    torch.save([1, 2], str(folder / "list.pth"))
    assert test_tool.find_checkpoints(str(folder)) == [(-1, bare), (7, ours)]
    assert "imagenet.pth: it holds backbone weights only" in spcl_log.text
    pt = str(folder / "late.pt")  # .pt as well as .pth
    save_checkpoint(cfg, pt, 9, seed=0)
    assert test_tool.find_checkpoints(str(folder)) == [(-1, bare), (7, ours), (9, pt)]
    os.remove(pt)
    assert "list.pth: it holds no model state" in spcl_log.text
    torch.save({"prototypes": torch.zeros(19, 512)}, str(folder / "prototypes.pth"))
    assert test_tool.find_checkpoints(str(folder)) == [(-1, bare), (7, ours)]
    assert "prototypes.pth: it holds class prototypes, not a model" in spcl_log.text
    (folder / "notes.pth").write_text("hello")  # in a folder: skipped, with what it is
    assert test_tool.find_checkpoints(str(folder)) == [(-1, bare), (7, ours)]
    assert "notes.pth: not a readable checkpoint (not a PyTorch checkpoint file" in spcl_log.text
    with pytest.raises(OSError, match=re.escape(f"cannot read checkpoint {folder / 'notes.pth'}: not a PyTorch")):
        test_tool.find_checkpoints(str(folder / "notes.pth"))
    # one file given: not skipped with a warning and then "no model checkpoint found": its reason is the error
    for name, why in (("imagenet.pth", "backbone weights only (an ImageNet file: no segmentation head), not a "
                                       "trained model"),
                      ("prototypes.pth", "class prototypes, not a model"), ("list.pth", "no model state")):
        with pytest.raises(ValueError, match=re.escape(f"{folder / name} holds {why}: give a trained model")):
            test_tool.find_checkpoints(str(folder / name))


@pytest.mark.parametrize("good", [1, 2])
def test_a_later_checkpoint_that_fails_keeps_the_results_before_it(tmp_path, test_tool, good):
    """A folder whose last checkpoint does not fit the config (16 classes under a 19-class config): the tool
    stops on it with the error, and metrics.json ({path: metrics}) and results.csv hold the checkpoints evaluated
    before, also when that is only one (both files then took their several-checkpoint form from the second on)."""
    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    paths = [str(ckpts / f"{name}.pth") for name in "ab"[:good]]
    for i, path in enumerate(paths):
        save_checkpoint(cfg, path, 10 * (i + 1), seed=i + 1)
    save_checkpoint(load_config("", opts_for(root) + ["MODEL.NUM_CLASSES", "16"]), str(ckpts / "c.pth"), 30, seed=3)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"c\.pth: key 'head\.convs\.0\.weight' has shape"):
        test_tool.main(["--checkpoint", str(ckpts), "--output", str(out)] + opts_for(root))
    with open(out / "metrics.json") as f:
        assert list(json.load(f)) == paths
    with open(out / "results.csv") as f:
        body = list(csv.reader(f))[1:]
    assert [r[1] for r in body] == paths
    assert float(body[-1][2]) == pytest.approx(reference_metrics(cfg, paths[-1])[0]["mIoU"], abs=1e-9)


def test_the_recorded_config_holds_the_protocol_the_flags_chose(tmp_path, test_tool):
    """--flip and --scales change the results: the config.yaml beside them says so (it said TEST.FLIP False)."""
    import yaml

    root = tmp_path / "data"
    make_val_tree(root)
    ckpt = str(tmp_path / "m.pth")
    save_checkpoint(load_config("", opts_for(root)), ckpt, 10, seed=1)
    out = tmp_path / "out"
    test_tool.main(["--checkpoint", ckpt, "--output", str(out), "--flip", "--scales", "0.5", "1"] + opts_for(root))
    with open(out / "config.yaml") as f:
        test = yaml.safe_load(f)["TEST"]
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert test["FLIP"] is True and test["SCALES"] == [0.5, 1.0] and test["SLIDING"] is False
    assert metrics["flip"] is True and metrics["scales"] == [0.5, 1.0]


def test_without_flags_the_configs_protocol_is_used_and_recorded(tmp_path, test_tool):
    """No --flip / --sliding / --scales: TEST.FLIP, TEST.SCALES and TEST.SLIDING (with TEST.WINDOW / TEST.STRIDE) of
    the config are the protocol, in the metrics and in metrics.json (docs/method.md "Evaluation")."""
    from spcl.evaluation import evaluate_checkpoint

    root = tmp_path / "data"
    make_val_tree(root)
    ckpt = str(tmp_path / "m.pth")
    save_checkpoint(load_config("", opts_for(root)), ckpt, 10, seed=1)
    plain = evaluate_checkpoint(load_config("", opts_for(root)), ckpt, torch.device("cpu"))
    sliding = ["TEST.SLIDING", "True", "TEST.WINDOW", "[16, 16]", "TEST.STRIDE", "[8, 8]"]
    for name, protocol in (("flip", ["TEST.FLIP", "True", "TEST.SCALES", "[0.5, 1.0]"]), ("sliding", sliding)):
        out = tmp_path / name
        test_tool.main(["--checkpoint", ckpt, "--output", str(out)] + opts_for(root) + protocol)
        metrics = json.load(open(out / "metrics.json"))
        ref = evaluate_checkpoint(load_config("", opts_for(root) + protocol), ckpt, torch.device("cpu"))
        assert metrics["mIoU"] == ref["mIoU"] != plain["mIoU"], name  # the protocol changes the result here
        if name == "flip":
            assert (metrics["flip"], metrics["sliding"], metrics["scales"]) == (True, False, [0.5, 1.0])
        else:
            assert (metrics["flip"], metrics["sliding"], metrics["scales"]) == (False, True, [1.0])
            assert (metrics["window"], metrics["stride"]) == ([16, 16], [8, 8])


def test_a_pipeline_run_or_stage_folder_is_not_an_output(tmp_path, test_tool):
    """test.py and gen_pseudo.py writing their config into a run's folder made the run's rerun fail as a config
    change (and gen_pseudo.py replaced a stage's labels): both refuse it, before writing anything."""
    run = tmp_path / "run"
    (run / "0_adv_warmup").mkdir(parents=True)
    (run / "0_adv_warmup" / "manifest.json").write_text("{}")
    (run / "config.yaml").write_text("SEED: 0\n")
    before = sorted(p.name for p in run.iterdir())
    root = tmp_path / "data"
    make_val_tree(root)
    ckpt = str(tmp_path / "m.pth")
    save_checkpoint(load_config("", opts_for(root)), ckpt, 10, seed=1)
    for folder, says in ((run, "is the folder of a pipeline run (it holds its stage folder 0_adv_warmup)"),
                         (run / "0_adv_warmup", "is a stage folder of a pipeline run (it holds manifest.json)")):
        with pytest.raises(ValueError, match=rf"--output {folder} {re.escape(says)}"):
            test_tool.main(["--checkpoint", ckpt, "--output", str(folder)] + opts_for(root))
        with pytest.raises(ValueError, match=rf"--output {folder} {re.escape(says)}"):
            load_tool("gen_pseudo").main(["--checkpoint", ckpt, "--output", str(folder)] + opts_for(root))
    assert sorted(p.name for p in run.iterdir()) == before and os.listdir(run / "0_adv_warmup") == ["manifest.json"]
    finished = tmp_path / "finished"  # a run folder whose summary is written
    finished.mkdir()
    (finished / "summary.json").write_text("[]")
    with pytest.raises(ValueError, match="it holds summary.json"):
        test_tool.main(["--checkpoint", ckpt, "--output", str(finished)] + opts_for(root))
    test_tool.main(["--checkpoint", ckpt, "--output", str(tmp_path / "fresh")] + opts_for(root))  # any other


def test_a_folder_another_tool_writes_is_refused_before_writing(tmp_path, test_tool):
    """test.py, infer.py and gen_pseudo.py into an --output another run holds: two writers would mix their
    metrics, predictions or label files. Each stops, naming the flag, the folder and the holder."""
    from spcl.utils.run_lock import LOCK, RunInUse, run_lock

    root = tmp_path / "data"
    make_val_tree(root)
    ckpt = str(tmp_path / "m.pth")
    save_checkpoint(load_config("", opts_for(root)), ckpt, 10, seed=1)
    images = str(root / "cityscapes" / "leftImg8bit" / "val")
    out = str(tmp_path / "out")
    calls = {"test": ["--checkpoint", ckpt], "infer": ["--checkpoint", ckpt, "--input", images],
             "gen_pseudo": ["--checkpoint", ckpt]}
    with run_lock(out):
        for tool, args in calls.items():
            with pytest.raises(RunInUse, match=rf"--output {re.escape(out)} is in use by another run \(pid {os.getpid()} "):
                load_tool(tool).main(args + ["--output", out] + opts_for(root))
            assert os.listdir(out) == [LOCK], tool
    assert load_tool("infer").main(calls["infer"] + ["--output", out] + opts_for(root)) == 0  # free again
    assert {LOCK, "config.yaml", "legend.png"} < set(os.listdir(out))


def test_bn_stats_from_reestimates_the_statistics_of_a_frozen_bn_config(tmp_path, test_tool):
    """--bn-stats-from: the checkpoint's BN running statistics are replaced by those of the named images
    before testing, also when the config freezes BN (the model is then built with trainable BN);
    recorded in metrics.json. The result equals a model whose statistics are set by hand to the
    per-image average, and differs from the plain evaluation."""
    from spcl.modeling.batchnorm import reestimate_running_stats

    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root) + ["TEST.BATCH_SIZE", "1"])
    assert cfg.MODEL.FREEZE_BN
    path = str(tmp_path / "model_final.pth")
    save_checkpoint(cfg, path, 7, seed=3)
    out = tmp_path / "eval_out"
    test_tool.main(["--checkpoint", path, "--output", str(out), "--bn-stats-from", "cityscapes_val"]
                   + opts_for(root) + ["TEST.BATCH_SIZE", "1"])
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["bn_stats_from"] == "cityscapes_val"
    model = build_segmentor(cfg, freeze_bn=False, load_weights=False)
    load_segmentor_weights(model, path)
    ds = build_dataset(cfg, "cityscapes_val", train=False)
    assert reestimate_running_stats(model, ({"image": ds[i]["image"][None]} for i in range(len(ds))),
                                    torch.device("cpu")) == 3
    ref = run_inference(model, build_test_loader(cfg, ds), 19, torch.device("cpu"))
    plain, _ = reference_metrics(cfg, path)
    np.testing.assert_allclose(np.array(metrics["IoU"], dtype=float), np.array(ref["IoU"], dtype=float))
    assert metrics["mIoU"] != pytest.approx(plain["mIoU"], abs=1e-6)


def test_test_num_images_is_exact_whatever_the_batch(tmp_path):
    """TEST.NUM_IMAGES 1 with batches of 3 scores the first image alone (it used to count whole batches,
    and per process): the same pixels and mIoU as a set that holds only that image."""
    from spcl.evaluation import evaluate_checkpoint

    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root) + ["TEST.NUM_IMAGES", "1", "TEST.BATCH_SIZE", "3"])
    path = str(tmp_path / "c.pth")
    save_checkpoint(cfg, path, 1, seed=4)
    one = evaluate_checkpoint(cfg, path)
    val = build_dataset(cfg, "cityscapes_val", train=False)
    assert one["num_pixels"] == int((val[0]["label"] != 255).sum())
    listed = tmp_path / "first.txt"
    listed.write_text(os.path.relpath(val.items[0][0], root / "cityscapes" / "leftImg8bit" / "val") + "\n")
    alone = evaluate_checkpoint(load_config("", opts_for(root) + ["DATASETS.TEST_LIST", str(listed)]), path)
    assert one["mIoU"] == alone["mIoU"] and one["num_pixels"] == alone["num_pixels"]
    whole = evaluate_checkpoint(load_config("", opts_for(root) + ["TEST.BATCH_SIZE", "3"]), path)
    assert whole["num_pixels"] > one["num_pixels"]


@pytest.mark.parametrize("flag", ["--save-color", "--save-labelids"])
def test_prediction_flags_with_several_checkpoints_are_refused_and_the_config_keys_said_ignored(tmp_path, test_tool,
                                                                                                 spcl_log, flag):
    """Predictions are written for one checkpoint file: --save-color with a folder of two used to be dropped without
    a word. The flag is refused before anything is written; TEST.SAVE_COLOR from a config is said to be ignored."""
    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root))
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i in (1, 2):
        save_checkpoint(cfg, str(folder / f"m{i}.pth"), 10 * i, seed=i)
    out = tmp_path / "out"
    with pytest.raises(test_tool.UsageError) as e:
        test_tool.main(["--checkpoint", str(folder), "--output", str(out), flag] + opts_for(root))
    assert str(e.value) == (f"{flag} writes one set of predictions: give one checkpoint file, not the 2 checkpoints "
                            f"of {folder}")
    assert not out.exists()
    test_tool.main(["--checkpoint", str(folder), "--output", str(out)] + opts_for(root) + ["TEST.SAVE_COLOR", "True"])
    assert "TEST.SAVE_COLOR is ignored with 2 checkpoints" in spcl_log.text and not (out / "color").exists()
    test_tool.main(["--checkpoint", str(folder / "m1.pth"), "--output", str(tmp_path / "one"), flag]
                   + opts_for(root))  # one file: written
    assert (tmp_path / "one" / ("color" if flag == "--save-color" else "labelIds")).is_dir()


def test_a_checkpoint_without_an_iteration_is_reported_without_one(tmp_path, test_tool, spcl_log):
    """A released or bare state dict records no iteration (-1 in results.csv): its results are headed by the
    file alone, not '(iteration -1)'; one of ours by its iteration."""
    root = tmp_path / "data"
    make_val_tree(root)
    cfg = load_config("", opts_for(root))
    ours = str(tmp_path / "ours.pth")
    save_checkpoint(cfg, ours, 7, seed=0)
    bare = str(tmp_path / "bare.pth")
    torch.save({"state_dict": torch.load(ours)["model"]}, bare)
    for path in (ours, bare):
        test_tool.main(["--checkpoint", path, "--output", str(tmp_path / ("eval_" + os.path.basename(path)))]
                       + opts_for(root))
    assert f"{ours} (iteration 7):\n" in spcl_log.text and f"{bare}:\n" in spcl_log.text
    assert "iteration -1" not in spcl_log.text
