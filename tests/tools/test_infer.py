"""Predictions for users: tools/infer.py on a folder of mixed images (sub-folders kept, non-images
skipped with a warning, outputs at each input's size, equal to `segment_image`), the input forms
(glob, list file), `segment_image(s)`, and tools/test.py's prediction files: consistent names,
overlay + legend, `--format-only` on cityscapes_test, a new eval folder per run, mIoU_tail in
results.csv."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from conftest import load_tool, restored_spcl_logger
from spcl.config import load_config
from spcl.data.labels import colorize, legend, overlay, trainid_to_labelid_lut
from spcl.evaluation import preprocess_image, segment_image, segment_images
from spcl.modeling import build_segmentor, load_trained_segmentor, predict_probs

# On the CPU also where a GPU is present: exact comparisons of the tools' outputs with references
# computed in the test, which only the CPU guarantees (conftest.hide_gpu).
pytestmark = pytest.mark.usefixtures("on_the_cpu")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
W, H = 32, 16


@pytest.fixture
def tools():
    """tools/infer.py and tools/test.py as modules; the `spcl` logger is restored afterwards."""
    with restored_spcl_logger():
        yield load_tool("infer"), load_tool("test")


OPTS = ["MODEL.BACKBONE", "resnet18", "MODEL.WEIGHTS", "", "INPUT.TEST_SIZE", f"[{W}, {H}]",
        "DATALOADER.NUM_WORKERS", "0"]


def make_checkpoint(tmp_path, iteration=5, seed=0, name="model_final.pth"):
    cfg = load_config("", OPTS)
    torch.manual_seed(seed)
    model = build_segmentor(cfg, load_weights=False)
    for conv in model.head.convs:  # spread the predictions over several classes
        nn.init.normal_(conv.weight, std=0.05)
        nn.init.normal_(conv.bias, std=1.0)
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / name)
    torch.save({"model": model.state_dict(), "iteration": iteration}, path)
    return cfg, path


def _image(size, channels, seed):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return arr[..., 0] if channels == 1 else arr


def make_inputs(root):
    """photos/: RGB PNG, a greyscale JPEG and an RGBA PNG in sub-folders, of three sizes; a text file
    and a broken .png that must be skipped."""
    files = {"a.png": ((W, H), 3), "sub/b.jpg": ((40, 24), 1), "sub/deep/c.png": ((20, 30), 4)}
    for rel, (size, ch) in files.items():
        path = root / "photos" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(size, ch, len(rel)), {1: "L", 3: "RGB", 4: "RGBA"}[ch]).save(str(path))
    (root / "photos" / "readme.txt").write_text("not an image")
    (root / "photos" / "sub" / "broken.png").write_bytes(b"\x89PNG not really")
    return files


def test_infer_folder(tmp_path, tools):
    infer, _ = tools
    cfg, ckpt = make_checkpoint(tmp_path)
    files = make_inputs(tmp_path)
    code = infer.main(["--checkpoint", ckpt, "--input", str(tmp_path / "photos"), "--batch-size", "2"] + OPTS)
    assert code == 0
    outs = sorted(p for p in os.listdir(tmp_path / "run" / "checkpoints") if p.startswith("infer_"))
    assert len(outs) == 1  # default: a new infer_<time> folder beside the checkpoint
    out = tmp_path / "run" / "checkpoints" / outs[0]
    model = load_trained_segmentor(cfg, ckpt)
    lut = trainid_to_labelid_lut(19)
    classes = set()
    for rel in files:
        stem = os.path.splitext(rel)[0]
        src = Image.open(str(tmp_path / "photos" / rel)).convert("RGB")
        rgb = np.array(src)
        expected = segment_image(model, rgb, cfg)
        assert expected.shape == rgb.shape[:2]
        classes |= set(np.unique(expected).tolist())
        ids = np.array(Image.open(str(out / f"{stem}_labelIds.png")))
        np.testing.assert_array_equal(ids, lut[expected])
        np.testing.assert_array_equal(np.array(Image.open(str(out / f"{stem}_color.png"))), colorize(expected, 19))
        np.testing.assert_array_equal(np.array(Image.open(str(out / f"{stem}_overlay.png"))),
                                      overlay(rgb, expected, 19, 0.5))
    assert len(classes) > 1
    np.testing.assert_array_equal(np.array(Image.open(str(out / "legend.png"))), legend(19))
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*_labelIds.png"))
    assert written == ["a_labelIds.png", "sub/b_labelIds.png", "sub/deep/c_labelIds.png"]
    log = (out / "log.txt").read_text()
    assert log.count("skipping") == 2 and "readme.txt" in log and "broken.png" in log
    # the unreadable image is named again where the run ends, after the progress bar
    lines = log.splitlines()
    end = next(i for i, line in enumerate(lines) if "3 of 4 images labelled into" in line)
    assert lines[end + 1].endswith(f"WARNING] not readable, skipped: {tmp_path / 'photos' / 'sub' / 'broken.png'}")
    # a second run never overwrites the first
    infer.main(["--checkpoint", ckpt, "--input", str(tmp_path / "photos" / "a.png")] + OPTS)
    assert len([p for p in os.listdir(tmp_path / "run" / "checkpoints") if p.startswith("infer_")]) == 2


def test_many_unreadable_images_are_counted_where_the_run_ends(tmp_path, tools):
    infer, _ = tools
    _, ckpt = make_checkpoint(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(7):
        (photos / f"{i}.png").write_bytes(b"\x89PNG not really")
    assert infer.main(["--checkpoint", ckpt, "--input", str(photos), "--output", str(tmp_path / "o")] + OPTS) == 1
    ends = [ln for ln in (tmp_path / "o" / "log.txt").read_text().splitlines() if "not readable, skipped: " in ln]
    assert ends[0].endswith(", ".join(str(photos / f"{i}.png") for i in range(5)) + " and 2 more (log.txt names them)")


def test_infer_rejects_bad_numbers_before_loading_anything(tmp_path, tools):
    infer, _ = tools
    _, ckpt = make_checkpoint(tmp_path)
    for flags, message in ((["--alpha", "3"], "--alpha is the colour weight"),
                           (["--batch-size", "-1"], "--batch-size must be positive")):
        with pytest.raises(ValueError, match=message):  # UsageError: one line from the command line
            infer.main(["--checkpoint", ckpt, "--input", str(tmp_path / "nowhere")] + flags + OPTS)


def test_infer_inputs_glob_and_list(tmp_path, tools, monkeypatch):
    infer, _ = tools
    make_inputs(tmp_path)
    photos = tmp_path / "photos"
    pairs, skipped = infer.collect_inputs(str(photos))
    assert [s for _, s in pairs] == ["a", "sub/b", "sub/broken", "sub/deep/c"]  # broken: by name an image
    assert [os.path.basename(f) for f in skipped] == ["readme.txt"]
    pairs, _ = infer.collect_inputs(str(photos / "sub" / "**" / "*.png"))
    assert sorted(s for _, s in pairs) == ["broken", "deep/c"]
    lst = tmp_path / "list.txt"
    lst.write_text("photos/a.png\n# a comment\n\nphotos/sub/b.jpg\n")
    pairs, skipped = infer.collect_inputs(str(lst))
    assert [s for _, s in pairs] == ["a", "sub/b"] and all(os.path.isfile(p) for p, _ in pairs)
    assert skipped == []  # a comment line is no file to skip
    upper = tmp_path / "LIST.TXT"  # a list by its extension in any case; an absolute path kept as it is
    upper.write_text(f"{photos / 'sub' / 'b.jpg'}\n")
    assert infer.collect_inputs(str(upper)) == ([(str(photos / "sub" / "b.jpg"), "b")], [])
    pairs, _ = infer.collect_inputs(str(photos / "a.png"))
    assert [s for _, s in pairs] == ["a"]
    (photos / "a.jpg").write_bytes((photos / "a.png").read_bytes())
    pairs, _ = infer.collect_inputs(str(photos))
    assert {"a_png", "a_jpg"} <= {s for _, s in pairs}  # same stem: the extension keeps them apart
    with pytest.raises(FileNotFoundError, match="input not found") as err:
        infer.collect_inputs(str(tmp_path / "nowhere"))
    assert "current directory" not in str(err.value)  # absolute: nothing to add
    monkeypatch.chdir(tmp_path)  # a relative input is read from where the tool runs, and the error says so
    with pytest.raises(FileNotFoundError, match=f"nowhere, read relative to the current directory {tmp_path}"):
        infer.collect_inputs("nowhere")


def test_infer_gives_each_image_its_own_outputs(tmp_path, tools):
    """img.jpg, img.JPG, img.png and img_png.png (four different images) once shared two output names:
    each now gets its own stem, and its label file is its own image's prediction."""
    from spcl.data.io import read_image

    infer, _ = tools
    cfg, ckpt = make_checkpoint(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, name in enumerate(["img.jpg", "img.JPG", "img.png", "img_png.png"]):
        fmt = "JPEG" if name.lower().endswith(".jpg") else "PNG"
        Image.fromarray(_image((W, H), 3, seed)).save(str(photos / name), fmt)
    pairs, _ = infer.collect_inputs(str(photos))
    stems = {os.path.basename(p): s for p, s in pairs}
    assert stems == {"img.JPG": "img_JPG", "img.jpg": "img_jpg_2", "img.png": "img_png_2", "img_png.png": "img_png"}
    assert infer.main(["--checkpoint", ckpt, "--input", str(photos), "--output", str(tmp_path / "out")] + OPTS) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labelIds.png")) == sorted(
        f"{s}_labelIds.png" for s in stems.values())
    model, lut = load_trained_segmentor(cfg, ckpt), trainid_to_labelid_lut(19)
    expected = {name: lut[segment_image(model, np.array(read_image(str(photos / name))), cfg)] for name in stems}
    assert len({e.tobytes() for e in expected.values()}) == 4  # an image written over another would show
    for name, stem in stems.items():
        np.testing.assert_array_equal(np.array(Image.open(str(tmp_path / "out" / f"{stem}_labelIds.png"))),
                                      expected[name])


def test_output_stems_are_distinct_readable_and_keep_unshared_names():
    infer = load_tool("infer")
    # the same file listed twice, names equal but for case (one file on macOS and Windows), a stem already
    # taken by another image's name
    assert infer.output_stems(["a/x.png", "a/x.png", "A/x.jpg", "x_png_2.png", "y.PNG", "Y.png"]) == [
        "a/x_png", "a/x_png_2", "A/x_jpg", "x_png_2", "y_PNG", "Y_png_2"]
    assert infer.output_stems(["b.jpg", "sub/b.jpg", "c.png"]) == ["b", "sub/b", "c"]


def test_infer_reads_images_in_symlinked_folders_once(tmp_path, tools):
    """README: an input folder is searched recursively; a sub-folder that is a link is too, and a link
    cycle neither hangs nor lists an image twice."""
    infer, _ = tools
    make_inputs(tmp_path)  # photos/: a.png, sub/b.jpg, sub/deep/c.png, …
    (tmp_path / "lnk").mkdir()
    Image.fromarray(_image((W, H), 3, 9)).save(str(tmp_path / "lnk" / "real.png"))
    os.symlink(tmp_path / "photos" / "sub", tmp_path / "lnk" / "city")
    os.symlink(tmp_path / "lnk", tmp_path / "lnk" / "city_loop")
    pairs, skipped = infer.collect_inputs(str(tmp_path / "lnk"))
    assert [s for _, s in pairs] == ["real", "city/b", "city/broken", "city/deep/c"]
    assert all(os.path.isfile(p) for p, _ in pairs) and skipped == []


def test_a_folder_as_checkpoint_points_to_its_model(tmp_path, tools):
    infer, _ = tools
    _, ckpt = make_checkpoint(tmp_path)  # run/checkpoints/model_final.pth
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoints"):
        with pytest.raises(IsADirectoryError, match=f"--checkpoint {folder} is a folder; did you mean {ckpt}\\?"):
            infer.main(["--checkpoint", str(folder), "--input", str(tmp_path)] + OPTS)
    with pytest.raises(IsADirectoryError, match="is a folder; give a checkpoint file"):
        infer.main(["--checkpoint", str(tmp_path), "--input", str(tmp_path)] + OPTS)


def test_segment_image_api(tmp_path):
    cfg, ckpt = make_checkpoint(tmp_path)
    model = load_trained_segmentor(cfg, ckpt)
    rgb = _image((45, 21), 3, 7)
    labels = segment_image(model, rgb, cfg)
    assert labels.shape == (21, 45) and labels.dtype == np.uint8
    ref = predict_probs(model, preprocess_image(rgb, cfg)[None], (21, 45)).argmax(1)[0].numpy()
    np.testing.assert_array_equal(labels, ref)
    # preprocessing: resized to TEST_SIZE, normalised with PIXEL_MEAN/STD
    x = preprocess_image(rgb, cfg)
    resized = np.array(Image.fromarray(rgb).resize((W, H), Image.BILINEAR), dtype=np.float32) / 255
    mean, std = np.array(cfg.INPUT.PIXEL_MEAN), np.array(cfg.INPUT.PIXEL_STD)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (resized - mean) / std, atol=1e-5)
    # RGBA and greyscale are converted to RGB first
    rgba = np.concatenate([rgb, np.full((21, 45, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(segment_image(model, rgba, cfg), labels)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(segment_image(model, grey, cfg),
                                  segment_image(model, np.repeat(grey[..., None], 3, axis=2), cfg))
    # a batch of mixed sizes equals one by one
    other = _image((W, H), 3, 8)
    both = segment_images(model, [rgb, other, rgb], cfg)
    np.testing.assert_array_equal(both[0], labels)
    np.testing.assert_array_equal(both[2], labels)
    np.testing.assert_array_equal(both[1], segment_image(model, other, cfg))
    # sliding windows smaller than the image change the labels; the whole-image window does not
    slid = segment_image(model, rgb, cfg, sliding=True)
    np.testing.assert_array_equal(slid, labels)  # default window 512x512 holds the 32x16 input
    cfg_small = load_config("", OPTS + ["TEST.WINDOW", "[16, 16]", "TEST.STRIDE", "[8, 8]"])
    from spcl.evaluation import sliding_window
    fn = sliding_window((16, 16), (8, 8))
    probs = predict_probs(model, preprocess_image(rgb, cfg)[None], (21, 45), logits_fn=fn)
    np.testing.assert_array_equal(segment_image(model, rgb, cfg_small, sliding=True), probs.argmax(1)[0].numpy())
    whole = predict_probs(model, preprocess_image(rgb, cfg)[None], (21, 45))
    assert (probs - whole).abs().max() > 1e-4  # the windows really were used


def test_segment_image_reads_pil_images_as_a_viewer_shows_them_and_refuses_what_it_cannot(tmp_path):
    """A PIL image of any mode gives the labels of its RGB pixels as shown (EXIF orientation applied, so
    the labels have the shown size); uint16 arrays are scaled to 8 bits; floats and tensors are refused."""
    from PIL import ImageOps

    cfg, ckpt = make_checkpoint(tmp_path)
    model = load_trained_segmentor(cfg, ckpt)
    rgb = _image((45, 21), 3, 7)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 45×21, shown 21×45
    Image.fromarray(rgb).save(str(tmp_path / "turned.png"), exif=exif)
    with Image.open(str(tmp_path / "turned.png")) as turned:
        labels = segment_image(model, turned, cfg)
        shown = np.asarray(ImageOps.exif_transpose(turned))
    assert labels.shape == (45, 21)
    np.testing.assert_array_equal(labels, segment_image(model, shown, cfg))
    palette = Image.fromarray(rgb).quantize(16)  # mode P: its colours, not its palette indices
    np.testing.assert_array_equal(segment_image(model, palette, cfg),
                                  segment_image(model, np.asarray(palette.convert("RGB")), cfg))
    wide = rgb.astype(np.uint16) * 257  # the same image at 16 bits
    np.testing.assert_array_equal(segment_image(model, wide, cfg), segment_image(model, rgb, cfg))
    with pytest.raises(TypeError, match="dtype float32 .* expected uint8"):
        segment_image(model, rgb.astype(np.float32) / 255, cfg)
    with pytest.raises(TypeError, match=r"tensor of shape \(3, 21, 45\); pass an H×W×3 uint8 array"):
        segment_image(model, torch.from_numpy(rgb).permute(2, 0, 1), cfg)


def _cityscapes_tree(root, split, with_labels):
    names = ["berlin/berlin_000000_000019_leftImg8bit.png", "bonn/bonn_000001_000020_leftImg8bit.png"]
    sizes = [(W, H), (48, 24)]
    rng = np.random.default_rng(0)
    for n, size in zip(names, sizes):
        p = root / "cityscapes" / "leftImg8bit" / split / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(str(p))
        if with_labels:
            lp = root / "cityscapes" / "gtFine" / split / n.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            lp.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.choice([7, 8, 11, 12, 21, 25, 26], size=(size[1], size[0])).astype(np.uint8)).save(str(lp))
    return names, sizes


def test_test_tool_format_only_on_the_test_split(tmp_path, tools):
    _, test_tool = tools
    root = tmp_path / "data"
    names, sizes = _cityscapes_tree(root, "test", with_labels=False)
    cfg, ckpt = make_checkpoint(tmp_path)
    opts = OPTS + ["DATASETS.DATA_DIR", str(root), "DATASETS.TEST", "cityscapes_test"]
    test_tool.main(["--checkpoint", ckpt, "--format-only"] + opts)
    evals = sorted(p for p in os.listdir(tmp_path / "run" / "checkpoints") if p.startswith("eval_"))
    assert len(evals) == 1
    out = tmp_path / "run" / "checkpoints" / evals[0]
    files = sorted(os.listdir(out / "labelIds"))
    assert files == ["berlin_000000_000019_labelIds.png", "bonn_000001_000020_labelIds.png"]
    model = load_trained_segmentor(cfg, ckpt)
    lut = trainid_to_labelid_lut(19)
    for n, (w, h), f in zip(names, sizes, files):
        ids = np.array(Image.open(str(out / "labelIds" / f)))
        assert ids.shape == (h, w)  # at the image's own size
        rgb = np.array(Image.open(str(root / "cityscapes" / "leftImg8bit" / "test" / n)))
        np.testing.assert_array_equal(ids, lut[segment_image(model, rgb, cfg)])
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["format_only"] is True and metrics["num_images"] == 2 and "mIoU" not in metrics
    assert not (out / "color").exists()
    # a second evaluation goes to a new folder; an unlabelled set implies --format-only
    test_tool.main(["--checkpoint", ckpt] + opts)
    evals = sorted(p for p in os.listdir(tmp_path / "run" / "checkpoints") if p.startswith("eval_"))
    assert len(evals) == 2
    again = tmp_path / "run" / "checkpoints" / [e for e in evals if e != out.name][0]
    assert sorted(os.listdir(again / "labelIds")) == files
    with open(again / "metrics.json") as f:
        assert json.load(f)["format_only"] is True


def test_test_tool_prediction_names_overlay_legend_and_tail_column(tmp_path, tools):
    _, test_tool = tools
    root = tmp_path / "data"
    names, sizes = _cityscapes_tree(root, "val", with_labels=True)
    cfg, ckpt = make_checkpoint(tmp_path)
    opts = OPTS + ["DATASETS.DATA_DIR", str(root)]
    out = tmp_path / "out"
    test_tool.main(["--checkpoint", ckpt, "--output", str(out), "--save-color", "--save-labelids"] + opts)
    model = load_trained_segmentor(cfg, ckpt)
    for n in names:
        stem = os.path.basename(n)[: -len("_leftImg8bit.png")]
        rgb = np.array(Image.open(str(root / "cityscapes" / "leftImg8bit" / "val" / n)))
        pred = segment_image(model, rgb, cfg)
        np.testing.assert_array_equal(np.array(Image.open(str(out / "labelIds" / f"{stem}_labelIds.png"))),
                                      trainid_to_labelid_lut(19)[pred])
        np.testing.assert_array_equal(np.array(Image.open(str(out / "color" / f"{stem}_color.png"))),
                                      colorize(pred, 19))
        np.testing.assert_array_equal(np.array(Image.open(str(out / "color" / f"{stem}_overlay.png"))),
                                      overlay(rgb, pred, 19))
    assert (out / "color" / "legend.png").is_file()
    assert sorted(os.listdir(out / "color")) == sorted(
        ["legend.png"] + [os.path.basename(n).replace("_leftImg8bit.png", s) for n in names
                          for s in ("_color.png", "_overlay.png")])
    # a folder of checkpoints: results.csv carries mIoU_tail after aAcc
    make_checkpoint(tmp_path, iteration=9, seed=1, name="model_0000009.pth")
    folder = tmp_path / "run" / "checkpoints"
    test_tool.main(["--checkpoint", str(folder)] + opts)
    evals = [p for p in os.listdir(folder) if p.startswith("eval_")]
    assert len(evals) == 1
    with open(folder / evals[0] / "results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:6] == ["iteration", "checkpoint", "mIoU", "mAcc", "aAcc", "mIoU_tail"] and rows[0][6] == "road"
    with open(folder / evals[0] / "metrics.json") as f:
        metrics = json.load(f)
    for row in rows[1:]:
        assert len(row) == len(rows[0]) == 6 + 19
        assert float(row[6]) == pytest.approx(metrics[row[1]]["IoU"][0], abs=1e-9)  # road, after the means
        assert float(row[5]) == pytest.approx(metrics[row[1]]["mIoU_tail"], abs=1e-9)
        assert float(row[2]) == pytest.approx(metrics[row[1]]["mIoU"], abs=1e-9)


def test_unique_output_dir_never_reuses_a_folder(tmp_path, monkeypatch):
    import time

    from spcl.evaluation import unique_output_dir

    monkeypatch.setattr(time, "strftime", lambda fmt: "20240101-000000")  # three calls in one second
    dirs = [unique_output_dir(str(tmp_path), "eval") for _ in range(3)]
    assert [os.path.basename(d) for d in dirs] == ["eval_20240101-000000", "eval_20240101-000000_2",
                                                    "eval_20240101-000000_3"]
    assert all(os.path.isdir(d) for d in dirs)


def test_overlay_and_legend_helpers():
    image = np.array([[[100, 0, 200], [10, 20, 30]]], dtype=np.uint8)  # 1×2
    label = np.array([[0, 255]], dtype=np.uint8)  # road, ignored
    out = overlay(image, label, 19, alpha=0.25)
    road = np.array([128, 64, 128])
    np.testing.assert_array_equal(out[0, 0], np.rint(0.75 * image[0, 0] + 0.25 * road).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 1], image[0, 1])  # ignored pixels keep the image
    with pytest.raises(ValueError, match="differ"):
        overlay(image, label.T, 19)
    for alpha in (0.0, 1.0):  # the ends: the image alone, the colours alone
        expected = image[0, 0] if alpha == 0.0 else road
        np.testing.assert_array_equal(overlay(image, label, 19, alpha=alpha)[0, 0], expected)
    for alpha in (-0.1, 3.0):
        with pytest.raises(ValueError, match="between 0 and 1"):
            overlay(image, label, 19, alpha=alpha)
    lg = legend(16, row_height=10)
    assert lg.shape == (160, 160, 3)
    np.testing.assert_array_equal(lg[5, 5], [128, 64, 128])  # first swatch: road
    np.testing.assert_array_equal(lg[15, 5], [244, 35, 232])  # second: sidewalk


def test_a_model_used_with_another_input_config_than_it_was_trained_with_is_named(tmp_path, spcl_log):
    """The weights load either way; a config that normalises, sizes or dilates otherwise than the run that
    trained the model changes its predictions, so the keys are named (with then / now) in a warning."""
    cfg, ckpt = make_checkpoint(tmp_path)
    state = torch.load(ckpt, weights_only=False)
    torch.save({**state, "config": cfg.dump()}, ckpt)

    def warnings():
        return [line for line in spcl_log.text.splitlines() if "was trained with another config" in line]

    load_trained_segmentor(cfg, ckpt)
    assert warnings() == []  # the config it was trained with
    other = load_config("", OPTS + ["INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]", "INPUT.TEST_SIZE", "[64, 32]",
                                    "TEST.FLIP", "True"])  # TEST.* is the protocol, free to choose
    load_trained_segmentor(other, ckpt)
    torch.save(state, ckpt)  # a file without its config: nothing to compare with
    load_trained_segmentor(other, ckpt)
    said = warnings()
    assert len(said) == 1, said
    assert f"INPUT.PIXEL_MEAN: {list(cfg.INPUT.PIXEL_MEAN)} then, [0.5, 0.5, 0.5] now" in said[0]
    assert f"INPUT.TEST_SIZE: [{W}, {H}] then, [64, 32] now" in said[0] and "TEST.FLIP" not in said[0]
    assert f"--print-config {ckpt}" in said[0]


def test_a_model_that_does_not_fit_the_config_names_what_it_was_trained_as(tmp_path):
    """A ResNet-18 model read with the default config (ResNet-101): the shape error also says the file was
    trained with MODEL.BACKBONE resnet18 and how to get its config."""
    cfg, ckpt = make_checkpoint(tmp_path)
    state = torch.load(ckpt, weights_only=False)
    torch.save({**state, "config": cfg.dump()}, ckpt)
    with pytest.raises(ValueError, match=r"has shape .*; it was trained with MODEL.BACKBONE resnet18, "
                                         r"MODEL.NUM_CLASSES 19: use its config \(python tools/convert_checkpoint.py "
                                         r"--print-config .*model_final.pth\)"):
        load_trained_segmentor(load_config("", ["MODEL.WEIGHTS", ""]), ckpt)
    # the same file as MODEL.WEIGHTS of a training stage (tools/train.py --stage …): the same hint
    from spcl.modeling import build_segmentor

    with pytest.raises(ValueError, match=r"has shape .*; it was trained with MODEL.BACKBONE resnet18, "
                                         r"MODEL.NUM_CLASSES 19: use its config"):
        build_segmentor(load_config("", ["MODEL.WEIGHTS", ckpt]))


def test_the_flip_and_scales_given_to_segment_image_win_over_the_config(tmp_path):
    """`segment_image(..., flip=, scales=)` override TEST.FLIP / TEST.SCALES (its docstring): each override
    gives the labels of a config that sets it, and differs from the labels without it."""
    cfg, ckpt = make_checkpoint(tmp_path)
    model = load_trained_segmentor(cfg, ckpt)
    torch.manual_seed(0)
    for conv in model.head.convs:  # features, not the biases, decide: labels that vary across the image
        nn.init.normal_(conv.weight, std=1.0)
    rgb = _image((45, 21), 3, 7)
    plain = segment_image(model, rgb, cfg)
    assert len(np.unique(plain)) > 1
    cases = [({"flip": True}, ["TEST.FLIP", "True"]), ({"scales": [0.5, 1.0]}, ["TEST.SCALES", "[0.5, 1.0]"])]
    for override, opts in cases:
        configured = load_config("", OPTS + opts)
        labels = segment_image(model, rgb, cfg, **override)
        np.testing.assert_array_equal(labels, segment_image(model, rgb, configured))
        assert (labels != plain).any(), override  # the option changes these labels: the check can tell
    np.testing.assert_array_equal(segment_image(model, rgb, load_config("", OPTS + ["TEST.FLIP", "True"]), flip=False),
                                  plain)


def test_inference_leaves_the_model_in_the_mode_it_was_in(tmp_path):
    """`segment_image` and `run_inference` predict in eval mode and hand the model back as they got it: a
    training loop that evaluates in between goes on training, and an eval-mode model stays in eval mode."""
    from spcl.evaluation import run_inference

    cfg, ckpt = make_checkpoint(tmp_path)
    model = load_trained_segmentor(cfg, ckpt)
    x = preprocess_image(_image((W, H), 3, 1), cfg)[None]
    batches = [{"image": x, "label": torch.zeros(1, H, W, dtype=torch.long), "name": ["a.png"], "index": [0]}]
    for training in (True, False):
        model.train(training)
        segment_image(model, _image((W, H), 3, 1), cfg)
        assert model.training is training
        for evaluate in (True, False):
            run_inference(model, batches, 19, torch.device("cpu"), evaluate=evaluate)
            assert model.training is training and all(m.training is training for m in model.modules())


def test_prediction_without_metrics_counts_images_not_batches(tmp_path):
    """run_inference(evaluate=False) (an unlabelled set, a test-server export) reports the images it
    predicted: batches of 2 and 1 images are 3."""
    from spcl.evaluation import run_inference

    cfg, ckpt = make_checkpoint(tmp_path)
    model = load_trained_segmentor(cfg, ckpt)
    x = torch.stack([preprocess_image(_image((W, H), 3, s), cfg) for s in range(3)])
    label = torch.full((H, W), 255, dtype=torch.long)
    batches = [{"image": x[:2], "label": label.expand(2, H, W), "name": ["a.png", "b.png"], "index": [0, 1]},
               {"image": x[2:], "label": label[None], "name": ["c.png"], "index": [2]}]
    assert run_inference(model, batches, 19, torch.device("cpu"), evaluate=False) == {"num_images": 3}


def test_an_overlay_of_an_image_of_another_size_blends_the_image_resized_to_the_labels(tmp_path):
    """save_prediction resizes the image to the label map (W×H for PIL) before blending: a 40×20 image over
    30×10 labels."""
    from spcl.evaluation import save_prediction

    image = _image((40, 20), 3, 3)
    pred = np.random.default_rng(4).integers(0, 19, (10, 30)).astype(np.uint8)
    save_prediction(pred, "x", 19, color_dir=str(tmp_path), image=image)
    resized = np.array(Image.fromarray(image).resize((30, 10), Image.BILINEAR))
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "x_overlay.png")), overlay(resized, pred, 19, 0.5))


def test_a_16_bit_array_is_scaled_to_8_bits_rounding_as_a_16_bit_file_is():
    """uint16 values v become round(v · 255 / 65535), as `to_rgb` does for a 16-bit PNG: 25700 → 100,
    65280 → 254 (keeping the high byte would give 255), 65535 → 255."""
    from spcl.evaluation.inference import as_rgb_image

    grey = np.array([[0, 25700, 65280, 65535]], dtype=np.uint16)
    rgb = np.asarray(as_rgb_image(grey))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 100, 254, 255]])
    assert (rgb == rgb[..., :1]).all()
    as_file = Image.fromarray(grey)
    assert as_file.mode == "I;16"
    np.testing.assert_array_equal(rgb, np.asarray(as_rgb_image(as_file)))
