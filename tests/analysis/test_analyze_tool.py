"""tools/analyze.py end to end on the tiny toy dataset with an untrained ResNet-18 checkpoint:
each subcommand writes a readable PNG of the expected size (and ccd its JSON of K values)."""
import importlib.util
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_tool, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool():
    if os.path.join(ROOT, "tools") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "tools"))
    spec = importlib.util.spec_from_file_location("analyze_tool", os.path.join(ROOT, "tools", "analyze.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(toy_root, tmp_path_factory):
    """Two untrained ResNet-18 checkpoints in `<stage>/checkpoints/model_final.pth` folders."""
    from spcl.modeling import build_segmentor

    folder = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_cfg(toy_root, str(folder), "MODEL.BACKBONE", "resnet18")
    paths = []
    for i, stage in enumerate(("0_adv_warmup", "3_align")):
        torch.manual_seed(i)
        path = folder / stage / "checkpoints" / "model_final.pth"
        path.parent.mkdir(parents=True)
        torch.save({"model": build_segmentor(cfg, load_weights=False).state_dict(), "iteration": 0}, path)
        paths.append(str(path))
    return paths


def overrides(toy_root):
    return ["DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False", "INPUT.TEST_SIZE", "[64,32]",
            "INPUT.SOURCE_SIZE", "[64,32]", "MODEL.BACKBONE", "resnet18"]


def png_size(path):
    with Image.open(path) as im:
        im.load()
        return im.size


def test_ccd_two_checkpoints(toy_root, checkpoints, tmp_path):
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "ccd")
    load_tool().main(["ccd", "--config", os.path.join(ROOT, "configs", "toy.yaml"), "--checkpoint", *checkpoints,
                      "--output", out, "--num-images", "4", "--min-pixels", "3", *overrides(toy_root)])
    with open(os.path.join(out, "ccd.json")) as f:
        result = json.load(f)
    assert result["num_images"] == {"source": 4, "target": 4}
    assert [c["label"] for c in result["checkpoints"]] == ["0_adv_warmup", "3_align"]
    assert "wall" in result["tail_classes"]
    for record in result["checkpoints"]:
        for s in ("both", "source", "target"):
            values = record["ccd"][s]
            assert len(values) == 19
            seen = [v for v in values if v is not None]
            assert seen and all(v >= 0 for v in seen)
        # a class has a value exactly when it has at least --min-pixels pixels (the toy images hold many
        # classes); the ones with 1-2 pixels are listed as too few
        assert result["min_pixels"] == 3
        for d in ("source", "target"):
            assert [v is not None for v in record["ccd"][d]] == [n >= 3 for n in record["pixels"][d]]
            assert record["too_few_pixels"][d] == [result["class_names"][k] for k, n in
                                                   enumerate(record["pixels"][d]) if 0 < n < 3]
    from spcl.analysis.plots import ccd_figure_size
    assert png_size(os.path.join(out, "ccd.png")) == ccd_figure_size() == (1200, 900)


def test_tsne_with_projector(toy_root, checkpoints, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    out = str(tmp_path / "tsne")
    # overrides straight after the checkpoints, then --labels: both parse
    load_tool().main(["tsne", "--config", os.path.join(ROOT, "configs", "toy.yaml"), "--labels", "warm-up", "align",
                      "--num-images", "4", "--per-class", "8", "--projector", "--output", out,
                      "--checkpoint", *checkpoints, *overrides(toy_root)])
    from spcl.analysis.plots import embedding_figure_size
    assert png_size(os.path.join(out, "tsne.png")) == embedding_figure_size(2) == (1180, 540)
    data = np.load(os.path.join(out, "tsne.npz"))
    assert list(data["labels"]) == ["warm-up", "align"]
    classes, domains = data["classes_0"], data["domains_0"]
    assert data["coords_0"].shape == (len(classes), 2) and set(np.unique(domains)) == {0, 1}
    assert np.bincount(classes * 2 + domains).max() <= 8  # at most 8 pixels per class and domain
    assert os.path.isfile(os.path.join(out, "projector", "projector_config.pbtxt"))


def test_ccd_min_pixels_masks_rare_classes(toy_root, checkpoints, tmp_path):
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "ccd")
    load_tool().main(["ccd", "--config", os.path.join(ROOT, "configs", "toy.yaml"), "--checkpoint", checkpoints[0],
                      "--output", out, "--num-images", "4", "--min-pixels", "20", *overrides(toy_root)])
    with open(os.path.join(out, "ccd.json")) as f:
        record = json.load(f)["checkpoints"][0]
    pixels = record["pixels"]["source"]
    rare = [k for k, n in enumerate(pixels) if 0 < n < 20]
    assert rare, pixels  # 4 images of 8×4 feature pixels: some classes are rare
    assert all(record["ccd"]["source"][k] is None for k in rare)
    assert all(record["ccd"]["source"][k] is not None for k, n in enumerate(pixels) if n >= 20)


def test_pca_embedding_is_saved_as_pca_png(toy_root, checkpoints, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(sys.modules, "sklearn", None)  # no scikit-learn: the PCA fallback
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    out = str(tmp_path / "emb")
    tool = load_tool()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("spcl").addHandler(handler)
    try:
        tool.main(["tsne", "--config", os.path.join(ROOT, "configs", "toy.yaml"), "--checkpoint", checkpoints[0],
                   "--num-images", "4", "--per-class", "8", "--output", out, *overrides(toy_root)])
    finally:
        logging.getLogger("spcl").removeHandler(handler)
    assert any("PCA, not t-SNE" in m and "pca.png" in m for m in messages)  # and it says so
    assert os.path.isfile(os.path.join(out, "pca.png")) and os.path.isfile(os.path.join(out, "pca.npz"))
    assert not os.path.exists(os.path.join(out, "tsne.png")) and not os.path.exists(os.path.join(out, "tsne.npz"))
    from spcl.analysis.plots import embedding_figure_size
    assert png_size(os.path.join(out, "pca.png")) == embedding_figure_size(1)
    assert list(np.load(os.path.join(out, "pca.npz"))["methods"]) == ["pca"]
    assert tool.embedding_file_stem({"pca"}) == "pca" and tool.embedding_file_stem({"tsne"}) == "tsne"
    assert tool.embedding_file_stem({"pca", "tsne"}) == "tsne"


def test_panels(toy_root, checkpoints, tmp_path):
    out = str(tmp_path / "panels")
    load_tool().main(["panels", "--config", os.path.join(ROOT, "configs", "toy.yaml"), "--checkpoint", checkpoints[0],
                      "--output", out, "--num-panels", "3", "--cell-width", "128", "--", *overrides(toy_root)])
    from spcl.analysis.panels import panel_grid_size
    assert png_size(os.path.join(out, "panels.png")) == panel_grid_size(3, 3, (128, 64), 19) == (400, 360)


def test_missing_matplotlib_says_how_to_install(monkeypatch, capsys, toy_root, checkpoints, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as exc:
        load_tool().main(["ccd", "--checkpoint", checkpoints[0], "--output", str(tmp_path), *overrides(toy_root)])
    assert exc.value.code == 2
    assert 'pip install -e ".[analysis]"' in capsys.readouterr().err


def test_labels_in_capitals_stay_labels_and_keys_go_to_the_overrides():
    """argparse hands `KEY VALUE …` after --checkpoint or --labels to that option: dotted keys and the
    config's top-level keys (SEED, OUTPUT_DIR) start the overrides; names like SPCL or FADA are labels."""
    import argparse

    split = load_tool()._split_overrides
    args = argparse.Namespace(checkpoint=["a.pth", "b.pth", "DATASETS.DATA_DIR", "/x", "SEED", "1"],
                              labels=["SPCL", "FADA"], opts=[])
    split(args)
    assert (args.checkpoint, args.labels, args.opts) == (["a.pth", "b.pth"], ["SPCL", "FADA"],
                                                         ["DATASETS.DATA_DIR", "/x", "SEED", "1"])
    args = argparse.Namespace(checkpoint=["a.pth"], labels=["SPCL", "OUTPUT_DIR", "/o", "MODEL.BACKBONE", "vgg16"],
                              opts=[])
    split(args)
    assert (args.labels, args.opts) == (["SPCL"], ["OUTPUT_DIR", "/o", "MODEL.BACKBONE", "vgg16"])


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "SEED", "1"], "--checkpoint needs at least one file (what followed it reads as KEY VALUE "
                                    "overrides)"),
    (["--checkpoint", "a.pth", "b.pth", "--labels", "SPCL"], "1 --labels for 2 checkpoints: give one name per "
                                                             "checkpoint, in the same order"),
])
def test_checkpoints_and_labels_that_do_not_pair_are_one_line_with_exit_2(tmp_path, args, message):
    """As every other mistake on a tool's command line: one line naming the flag, the --debug hint, exit 2."""
    proc = run_tool("analyze.py", "ccd", *args, "--output", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"analyze.py: error: {message}", "(run with --debug for the full traceback)"]
    assert os.listdir(tmp_path) == []  # nothing written


def capture_panel_predictions(monkeypatch) -> list:
    """The predictions each `panels` run puts into its grid (per checkpoint, one label map per image)."""
    import spcl.analysis

    captured, real = [], spcl.analysis.make_panel_grid

    def capture(images, labels, predictions, *args, **kwargs):
        captured.append([[p.copy() for p in column] for column in predictions])
        return real(images, labels, predictions, *args, **kwargs)

    monkeypatch.setattr(spcl.analysis, "make_panel_grid", capture)
    return captured


def test_panels_predict_as_the_evaluation_does_with_sliding_windows(toy_root, checkpoints, tmp_path, monkeypatch):
    """TEST.SLIDING (with TEST.SCALES and TEST.FLIP) reaches the panels: each panel's labels are the
    labelIds evaluate_checkpoint (tools/test.py) writes for that image with the same config, and a window
    smaller than the image changes them from whole-image inference."""
    from spcl.analysis import analysis_dataset
    from spcl.data.labels import labelid_to_trainid_lut
    from spcl.evaluation import evaluate_checkpoint
    from spcl.evaluation.inference import prediction_stem

    captured = capture_panel_predictions(monkeypatch)
    protocol = ["TEST.SCALES", "[1.0,0.75]", "TEST.FLIP", "True"]
    sliding = ["TEST.SLIDING", "True", "TEST.WINDOW", "[32,16]", "TEST.STRIDE", "[24,12]"]
    for opts in (protocol, protocol + sliding):
        load_tool().main(["panels", "--config", os.path.join(ROOT, "configs", "toy.yaml"),
                          "--checkpoint", checkpoints[0], "--output", str(tmp_path / "panels"), "--num-images", "0",
                          "--num-panels", "4", "--cell-width", "64", "--", *overrides(toy_root), *opts])
    (whole,), (slid,) = captured
    cfg = tiny_cfg(toy_root, str(tmp_path / "eval"), "MODEL.BACKBONE", "resnet18", *protocol, *sliding)
    evaluate_checkpoint(cfg, checkpoints[0], labelid_dir=str(tmp_path / "ids"))
    dataset = analysis_dataset(cfg, "target")
    assert len(dataset) == len(slid) == 4  # every val image has a panel (evenly spaced over all 4)
    to_train = labelid_to_trainid_lut(cfg.MODEL.NUM_CLASSES)
    for i, pred in enumerate(slid):
        stem = prediction_stem(dataset[i]["name"])
        evaluated = to_train[np.asarray(Image.open(tmp_path / "ids" / f"{stem}_labelIds.png"))]
        assert pred.shape == evaluated.shape == tuple(dataset[i]["label"].shape)
        np.testing.assert_array_equal(pred, evaluated)
    assert any((a != b).any() for a, b in zip(whole, slid))  # the windows do change the prediction


class Recorder:
    """Wraps a function and records that it ran."""

    def __init__(self, fn, name, calls):
        self.fn, self.name, self.calls = fn, name, calls

    def __call__(self, *args, **kwargs):
        self.calls.append(self.name)
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("command", ["ccd", "tsne", "panels"])
def test_a_bad_checkpoint_fails_before_any_pass(toy_root, checkpoints, tmp_path, monkeypatch, command):
    """A typo in the second checkpoint fails before the first checkpoint's model is loaded or its
    images are read, naming the missing file; so do a folder, a file that is no checkpoint and one that
    is no trained model."""
    import spcl.analysis

    pytest.importorskip("matplotlib")
    tool = load_tool()
    calls = []
    for name in ("collect_feature_stats", "iter_pixel_features", "predict_labels"):
        monkeypatch.setattr(spcl.analysis, name, Recorder(getattr(spcl.analysis, name), name, calls))
    monkeypatch.setattr(tool, "_load_model", Recorder(tool._load_model, "_load_model", calls))
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    backbone = tmp_path / "resnet18-imagenet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, backbone)
    missing = os.path.join(os.path.dirname(checkpoints[1]), "model_fnal.pth")
    stage = os.path.dirname(os.path.dirname(checkpoints[1]))
    bad = {missing: FileNotFoundError, stage: IsADirectoryError, str(text): OSError, str(backbone): ValueError}
    out = tmp_path / "out"
    for path, error in bad.items():
        with pytest.raises(error) as exc:
            tool.main([command, "--config", os.path.join(ROOT, "configs", "toy.yaml"), "--checkpoint",
                       checkpoints[0], path, "--output", str(out), "--num-images", "2", *overrides(toy_root)])
        message = str(exc.value)
        assert path in message and "\n" not in message, message
        assert calls == [], (path, calls)
        if path == stage:  # as loading says it: the folder's model
            assert message.endswith(f"did you mean {checkpoints[1]}?"), message
    assert not out.exists()  # nothing written either


def test_a_missing_checkpoint_is_one_line_on_the_command_line(toy_root, checkpoints, tmp_path):
    missing = str(tmp_path / "model_fnal.pth")
    proc = run_tool("analyze.py", "panels", "--checkpoint", checkpoints[0], missing, "--output", str(tmp_path / "o"),
                    *overrides(toy_root))
    assert proc.returncode == 2, proc.stderr
    first, *rest = proc.stderr.splitlines()
    assert first == f"analyze.py: error: --checkpoint: weights file not found: {missing!r}", first
    assert rest == ["(run with --debug for the full traceback)"]
