"""Tests of the toy domain-shift dataset generator (`spcl.toy`) and `tools/make_toy.py`.

Tiny sizes and a handful of images, so the whole file runs in a few seconds on a CPU.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spcl.data.labels import LABELIDS_19
from spcl.toy import (DRAWN_CLASSES, EGO_VEHICLE_ID, ID, SOURCE_STYLE, TARGET_STYLE, UNLABELED_ID,
                           generate_toy_dataset, render_scene)
from spcl.toy.scene import _Scene
from spcl.toy.styles import FOCAL

REPO = Path(__file__).resolve().parents[2]
VALID_IDS = set(LABELIDS_19) | {UNLABELED_ID, EGO_VEHICLE_ID}
SMALL = dict(num_source=3, num_target_train=4, num_target_val=2, size=(64, 32))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_names_and_label_formats(tmp_path):
    info = generate_toy_dataset(tmp_path, seed=0, **SMALL)
    assert info["generated"] and info["num_source"] == 3 and info["size"] == [64, 32]
    names = set(_files(tmp_path))
    src = {f"gta5/{d}/{i:05d}.png" for d in ("images", "labels") for i in (1, 2, 3)}
    tgt = set()
    for split, city, frame in [("train", "toytown", 0), ("train", "toytown", 1), ("train", "mockburg", 0),
                               ("train", "mockburg", 1), ("val", "valville", 0), ("val", "valville", 1)]:
        stem = f"{city}/{city}_000000_{frame:06d}"
        tgt |= {f"cityscapes/leftImg8bit/{split}/{stem}_leftImg8bit.png",
                f"cityscapes/gtFine/{split}/{stem}_gtFine_labelIds.png"}
    assert names == src | tgt
    assert (tmp_path / "toy_manifest.json").is_file()

    for i in (1, 2, 3):
        img = Image.open(tmp_path / f"gta5/images/{i:05d}.png")
        lab = Image.open(tmp_path / f"gta5/labels/{i:05d}.png")
        assert img.mode == "RGB" and lab.mode == "P" and img.size == lab.size == (64, 32)
        ids = set(np.unique(np.array(lab)).tolist())  # palette indices, never the colours
        assert ids <= VALID_IDS and len(ids & set(LABELIDS_19)) >= 5
    for lab_path in (tmp_path / "cityscapes/gtFine").rglob("*_gtFine_labelIds.png"):
        img_path = Path(str(lab_path).replace("gtFine", "leftImg8bit", 1)
                        .replace("_gtFine_labelIds", "_leftImg8bit"))
        img, lab = Image.open(img_path), Image.open(lab_path)
        assert img.mode == "RGB" and lab.mode == "L" and img.size == lab.size == (64, 32)
        ids = set(np.unique(np.array(lab)).tolist())
        assert ids <= VALID_IDS and len(ids & set(LABELIDS_19)) >= 5


def test_deterministic_per_seed(tmp_path):
    a = _files(Path(generate_toy_dataset(tmp_path / "a", seed=3, **SMALL)["root"]))
    b = _files(Path(generate_toy_dataset(tmp_path / "b", seed=3, **SMALL)["root"]))
    c = _files(Path(generate_toy_dataset(tmp_path / "c", seed=4, **SMALL)["root"]))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if "images" in k or "leftImg8bit" in k)
    # Image i does not depend on how many other images are generated.
    d = _files(Path(generate_toy_dataset(tmp_path / "d", seed=3, num_source=1, num_target_train=0,
                                         num_target_val=0, size=(64, 32))["root"]))
    assert d["gta5/images/00001.png"] == a["gta5/images/00001.png"]


def test_manifest_noop_and_regeneration(tmp_path):
    assert generate_toy_dataset(tmp_path, **SMALL)["generated"]
    probe = tmp_path / "gta5/images/00001.png"
    stamp = probe.stat().st_mtime_ns
    assert not generate_toy_dataset(tmp_path, **SMALL)["generated"]
    assert probe.stat().st_mtime_ns == stamp
    assert generate_toy_dataset(tmp_path, overwrite=True, **SMALL)["generated"]
    # Different arguments: regenerated, and files of the old generation do not linger.
    assert generate_toy_dataset(tmp_path, **{**SMALL, "num_source": 2})["generated"]
    assert not (tmp_path / "gta5/images/00003.png").exists()
    # A missing file triggers regeneration.
    (tmp_path / "gta5/labels/00002.png").unlink()
    assert generate_toy_dataset(tmp_path, **{**SMALL, "num_source": 2})["generated"]
    assert (tmp_path / "gta5/labels/00002.png").is_file()


def test_regeneration_removes_the_class_indexes_of_the_old_images(tmp_path):
    """prepare_data.py's per-class index lists which classes each image holds: after the images are replaced it
    would describe others, and class-balanced sampling read it silently. An up-to-date dataset keeps it."""
    generate_toy_dataset(tmp_path, **SMALL)
    index = tmp_path / "gta5_train_class_index.json"
    index.write_text("{}")
    assert not generate_toy_dataset(tmp_path, **SMALL)["generated"] and index.is_file()
    assert generate_toy_dataset(tmp_path, seed=1, **SMALL)["generated"] and not index.exists()


def test_refuses_to_delete_foreign_folders(tmp_path):
    (tmp_path / "gta5" / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="toy_manifest.json"):
        generate_toy_dataset(tmp_path, overwrite=True, **SMALL)
    assert (tmp_path / "gta5" / "images").is_dir()


@pytest.fixture(scope="module")
def renders() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """30 scenes per domain at the default size: (images N×H×W×3, labelIds N×H×W)."""
    out = {}
    for code, style in ((0, SOURCE_STYLE), (1, TARGET_STYLE)):
        pairs = [render_scene(np.random.default_rng([0, code, 0, i]), style, (128, 64)) for i in range(30)]
        out[style.name] = (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
    return out


def test_every_drawn_class_appears_in_both_domains(renders):
    for images, labels in renders.values():
        present = set(np.unique(labels).tolist())
        assert {ID[c] for c in DRAWN_CLASSES} <= present
    assert EGO_VEHICLE_ID in set(np.unique(renders[TARGET_STYLE.name][1]).tolist())
    assert UNLABELED_ID in set(np.unique(renders[SOURCE_STYLE.name][1]).tolist())


def test_shift_is_per_class_not_a_global_colour_transform(renders):
    classes = ["road", "sidewalk", "building", "vegetation", "terrain", "sky", "person", "car"]
    means = {}
    for name, (images, labels) in renders.items():
        x = images.reshape(-1, 3).astype(np.float64)
        x = (x - x.mean(0)) / x.std(0)                      # per-domain, per-channel normalisation
        y = labels.reshape(-1)
        means[name] = np.stack([x[y == ID[c]].mean(0) for c in classes])
    src, tgt = means[SOURCE_STYLE.name], means[TARGET_STYLE.name]
    gaps = np.linalg.norm(src - tgt, axis=1)
    assert (gaps > 0.4).sum() >= 4, dict(zip(classes, gaps.round(2)))
    # Not even the best affine colour map (3×3 matrix + offset) takes source class colours to target ones.
    design = np.hstack([src, np.ones((len(classes), 1))])
    fit, *_ = np.linalg.lstsq(design, tgt, rcond=None)
    residual = np.linalg.norm(design @ fit - tgt, axis=1)
    assert residual.mean() > 0.15, residual.round(2)
    # Yet the brightness ordering that identifies classes is shared (mean raw intensity per class).
    for images, labels in renders.values():
        grey = images.mean(-1)
        lum = {c: grey[labels == ID[c]].mean() for c in classes}
        assert lum["sky"] == max(lum.values())
        assert lum["sidewalk"] > lum["road"] and lum["terrain"] > lum["vegetation"]


def test_class_frequencies_differ(renders):
    def freq(name: str, cls: str) -> float:
        return float((renders[name][1] == ID[cls]).mean())

    s, t = SOURCE_STYLE.name, TARGET_STYLE.name
    assert freq(t, "person") > 1.5 * freq(s, "person")
    assert freq(s, "car") > 1.3 * freq(t, "car")
    assert freq(s, "truck") + freq(s, "bus") > 1.2 * (freq(t, "truck") + freq(t, "bus"))


def test_make_toy_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_toy", REPO / "tools" / "make_toy.py")
    make_toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_toy)
    args = ["--root", str(tmp_path / "toy"), "--seed", "1", "--num-source", "2", "--num-target-train", "2",
            "--num-target-val", "1", "--size", "64", "32", "--preview", str(tmp_path / "preview.png")]
    assert make_toy.main(args)["generated"]
    assert re.search(r"wrote .*toy", capsys.readouterr().out)
    assert (tmp_path / "toy/toy_manifest.json").is_file()
    assert Image.open(tmp_path / "preview.png").size[0] > 4 * 64
    check_preview(tmp_path / "preview.png", rows=2, size=(64, 32))
    assert not make_toy.main(args)["generated"]
    assert "up to date" in capsys.readouterr().out
    assert make_toy.main(args + ["--overwrite"])["generated"]  # written again although up to date
    assert re.search(r"wrote .*toy", capsys.readouterr().out)
    with pytest.raises(ValueError, match="--preview-rows must be at least 1, got 0"):  # before any work
        make_toy.main(["--root", str(tmp_path / "other"), "--preview", str(tmp_path / "p.png"), "--preview-rows", "0"])
    assert not (tmp_path / "other").exists()


def test_prepare_toy_data_writes_the_toy_of_the_config(tmp_path, monkeypatch):
    """tools/train.py's data step: with DATASETS.TOY.GENERATE, the toy of every DATASETS.TOY key is written into
    DATASETS.DATA_DIR; without it, nothing is."""
    from spcl.config import get_cfg

    spec = importlib.util.spec_from_file_location("make_toy", REPO / "tools" / "make_toy.py")
    make_toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_toy)
    calls = []
    monkeypatch.setattr(make_toy, "generate_toy_dataset", lambda root, **kw: calls.append((root, kw)))
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path / "toy"), "DATASETS.TOY.SEED", "7",
                         "DATASETS.TOY.NUM_SOURCE", "3", "DATASETS.TOY.NUM_TARGET_TRAIN", "4",
                         "DATASETS.TOY.NUM_TARGET_VAL", "5", "DATASETS.TOY.SIZE", "[48, 24]"])
    make_toy.prepare_toy_data(cfg)
    assert calls == []
    cfg.merge_from_list(["DATASETS.TOY.GENERATE", "True"])
    make_toy.prepare_toy_data(cfg)
    assert calls == [(str(tmp_path / "toy"), {"seed": 7, "num_source": 3, "num_target_train": 4,
                                              "num_target_val": 5, "size": (48, 24)})]


def check_preview(path, rows: int, size: tuple):
    """The preview has a header row with a title over each of the 4 columns, the bare grid, and a
    class-colour legend under it (so it is taller than the bare grid)."""
    from spcl.analysis.panels import HEADER
    from spcl.data.labels import palette

    px = np.asarray(Image.open(path).convert("RGB"))
    w, h = size
    scale = 2  # grids under 800 px wide are drawn at twice the size
    bare_h = (rows * h + (rows - 1) * 4) * scale
    assert px.shape[1] == (4 * w + 3 * 4) * scale
    assert px.shape[0] > HEADER + bare_h
    header = px[:HEADER]
    for c in range(4):  # dark text pixels over each column
        x0 = c * (w + 4) * scale
        assert (header[:, x0: x0 + w * scale].sum(-1) < 200).any(), f"no title over column {c}"
    legend = px[HEADER + bare_h:]
    colours = {tuple(int(v) for v in p) for p in palette(19)}
    found = {tuple(int(v) for v in p) for p in legend.reshape(-1, 3)} & colours
    assert found == colours  # a swatch of every class colour


def test_things_are_resolvable_at_stride_8(renders):
    """Thing classes must span feature cells at the default size, or no method can segment them: the
    best a stride-8 logit map can do (one-hot labels average-pooled by 8, upsampled bilinearly, argmax)
    stays above 0.15 for poles, lights, signs, persons and two-wheelers (toy-v1: 0 for pole and
    light, 4 for bicycle), and near 60 mIoU overall in both domains (toy-v2, before the Cityscapes focal
    length: 54.8 on these source scenes)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    ids = [ID[c] for c in DRAWN_CLASSES]
    for images, labels in renders.values():
        y = torch.from_numpy(labels).long()
        onehot = torch.stack([(y == i).float() for i in ids], 1)
        up = F.interpolate(F.avg_pool2d(onehot, 8), size=y.shape[1:], mode="bilinear", align_corners=False)
        pred, valid = up.argmax(1), onehot.sum(1) > 0
        iou = {}
        for k, c in enumerate(DRAWN_CLASSES):
            gt, p = onehot[:, k] > 0, (pred == k) & valid
            iou[c] = float((gt & p).sum() / (gt | p).sum())
        small = {c: round(iou[c], 2) for c in ("pole", "light", "sign", "person", "rider", "bicycle", "motorcycle")}
        assert min(small.values()) > 0.15, small
        assert np.mean(list(iou.values())) > 0.59, np.mean(list(iou.values()))


def test_concurrent_callers_share_a_folder(tmp_path):
    """Two callers (e.g. benchmark seeds in parallel processes) on one DATA_DIR: one writes, the other
    waits on the lock and finds the finished generation, so nobody deletes files another is writing."""
    import threading

    results = []
    threads = [threading.Thread(target=lambda: results.append(generate_toy_dataset(tmp_path / "a", **SMALL)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["generated"] for r in results) == [False, True]
    assert _files(tmp_path / "a") == _files(Path(generate_toy_dataset(tmp_path / "b", **SMALL)["root"]))


def test_each_domain_and_split_draws_its_own_scenes(tmp_path):
    """Image i of a (domain, split) is drawn from `default_rng([seed, domain, split, i])` (spcl/toy/writer.py
    `generate_toy_dataset`), so a target val scene is never a copy of the target train scene of the same index
    (no train/test overlap) and the target does not repeat the source's layouts."""
    generate_toy_dataset(tmp_path, seed=3, **SMALL)
    size = SMALL["size"]
    gta = np.array(Image.open(tmp_path / "gta5/labels/00001.png"))
    train = np.array(Image.open(tmp_path / "cityscapes/gtFine/train/toytown/toytown_000000_000000_gtFine_labelIds.png"))
    val = np.array(Image.open(tmp_path / "cityscapes/gtFine/val/valville/valville_000000_000000_gtFine_labelIds.png"))
    np.testing.assert_array_equal(gta, render_scene(np.random.default_rng([3, 0, 0, 0]), SOURCE_STYLE, size)[1])
    np.testing.assert_array_equal(train, render_scene(np.random.default_rng([3, 1, 0, 0]), TARGET_STYLE, size)[1])
    np.testing.assert_array_equal(val, render_scene(np.random.default_rng([3, 1, 1, 0]), TARGET_STYLE, size)[1])
    assert not np.array_equal(train, val)


@pytest.mark.parametrize("size", [(15, 8), (16, 7)])
def test_a_size_below_16_by_8_is_refused(tmp_path, size):
    """generate_toy_dataset refuses sizes below (16, 8) width × height (spcl/toy/writer.py), before writing."""
    with pytest.raises(ValueError, match=r"at least \(16, 8\)"):
        generate_toy_dataset(tmp_path, num_source=1, num_target_train=0, num_target_val=0, size=size)
    assert not (tmp_path / "gta5").exists()



# ---- what each `DomainStyle` look parameter does (spcl/toy/styles.py field comments) ------------------------------
# A style with every look effect off: flat colours, no lighting, haze, vignette, blur or noise.
PLAIN = dataclasses.replace(SOURCE_STYLE, structured_textures=False, stain=0.0, colour_jitter=0.0, brightness=1.0,
                            saturation=1.0, haze=0.0, vignette=0.0, blur_sigma=0.0, noise_std=0.0)


def _finish(style, colour, size=(32, 16), depth=1e4, seed=0) -> np.ndarray:
    """`_Scene.finish` (lighting and sensor) of a canvas of one flat colour at one depth, as float H×W×3."""
    w, h = size
    scene = _Scene(np.random.default_rng(seed), style, w, h)
    scene.rgb = np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3)).copy()
    scene.depth = np.broadcast_to(np.asarray(depth, np.float32), (h, w)).copy()
    return scene.finish().astype(np.float64)


def test_saturation_brightness_rounding_and_clipping_by_hand():
    """saturation blends towards the pixel's grey (1 keeps colours, 0 makes them grey), then the global gain
    `brightness`; the result is rounded and clipped to 0..255."""
    out = _finish(dataclasses.replace(PLAIN, saturation=0.5, brightness=0.8), (200, 100, 0))
    assert (out == [120, 80, 40]).all()   # grey 100: (100 + 0.5·(100, 0, -100))·0.8
    assert (_finish(dataclasses.replace(PLAIN, saturation=0.0), (200, 100, 0)) == 100).all()
    assert (_finish(dataclasses.replace(PLAIN, brightness=1.5), (200, 100, 0)) == [255, 150, 0]).all()
    assert (_finish(dataclasses.replace(PLAIN, brightness=0.9), (101, 101, 101)) == 91).all()  # 90.9 rounds up


def test_haze_blends_towards_the_haze_colour_with_depth():
    """`haze` is the largest blend towards `haze_colour`, reached far away; at `haze_depth` metres the blend is
    63 % of it (1 - 1/e), and nearby pixels keep their colour."""
    style = dataclasses.replace(PLAIN, haze=0.5, haze_depth=10.0, haze_colour=(200, 100, 40))
    assert (_finish(style, (0, 0, 0), depth=1e4) == [100, 50, 20]).all()
    a = 0.5 * (1 - np.exp(-1))
    np.testing.assert_allclose(_finish(style, (0, 0, 0), depth=10.0)[0, 0], np.array([200, 100, 40]) * a, atol=0.51)
    assert (_finish(style, (0, 0, 0), depth=0.0) == 0).all()


def test_vignette_darkens_the_corners_by_its_amount():
    """`vignette` is the relative darkening in the corners; the centre keeps its brightness."""
    out = _finish(dataclasses.replace(PLAIN, vignette=0.4), (200, 200, 200), size=(64, 32))
    darkening = 1 - out[..., 0] / 200
    for corner in (darkening[0, 0], darkening[0, -1], darkening[-1, 0], darkening[-1, -1]):
        assert 0.9 * 0.4 < corner <= 0.4 + 0.5 / 200
    assert darkening[15:17, 31:33].max() <= 0.5 / 200
    assert (np.diff(darkening[16, 32:]) >= -1e-9).all()  # darker towards the edge


@pytest.mark.parametrize("width", [128, 256])
def test_blur_is_a_gaussian_of_blur_sigma_pixels_at_128_wide(width):
    """`blur_sigma` is the Gaussian blur in pixels at 128 px width, scaled with the width: a step edge becomes a
    Gaussian CDF of that width, along both axes, and flat areas (the borders included) keep their value."""
    from math import erf, sqrt

    sigma = 1.5 * width / 128
    style = dataclasses.replace(PLAIN, blur_sigma=1.5)
    w, h = width, 64
    scene = _Scene(np.random.default_rng(0), style, w, h)
    scene.rgb = np.zeros((h, w, 3), np.float32)
    scene.rgb[:, w // 2:] = 200
    scene.depth[:] = 0
    step_x = scene.finish().astype(np.float64)
    want = np.array([200 * 0.5 * (1 + erf((c + 0.5 - w // 2) / (sigma * sqrt(2)))) for c in range(w)])
    np.testing.assert_allclose(step_x[h // 2, :, 1], want, atol=1.51)
    assert (step_x[:, :, 1] == step_x[:1, :, 1]).all()  # no change along the edge, top and bottom rows included
    scene.rgb = np.zeros((h, w, 3), np.float32)
    scene.rgb[h // 2:] = 200
    step_y = scene.finish().astype(np.float64)
    np.testing.assert_allclose(step_y[:, w // 2, 1], want[w // 2 - h // 2: w // 2 + h // 2], atol=1.51)


def test_noise_std_is_the_sensor_noise_in_grey_levels():
    for std in (2.0, 6.0):
        diff = _finish(dataclasses.replace(PLAIN, noise_std=std), (128, 128, 128), size=(128, 64)) - 128
        assert abs(diff.std() - std) < 0.1 * std and abs(diff.mean()) < 0.2


def test_stain_is_smooth_mottling_of_that_fraction_of_the_colour():
    """`stain` is the amplitude of low-frequency mottling as a fraction of the colour: the colour varies by up to
    ± stain, both ways, and smoothly (a bilinear grid of 8-px cells at 128 px wide)."""
    lo, hi = [], []
    for seed in range(4):
        out = _finish(dataclasses.replace(PLAIN, stain=0.5), (100, 100, 100), size=(128, 64), seed=seed)[..., 0]
        rel = out / 100 - 1
        assert rel.min() >= -0.5 - 1e-9 and rel.max() <= 0.5 + 1e-9
        lo.append(rel.min())
        hi.append(rel.max())
        step = 100 * 0.5 * 2 / 8 + 1  # steepest slope of the interpolated grid, plus rounding
        assert np.abs(np.diff(out, axis=0)).max() <= step and np.abs(np.diff(out, axis=1)).max() <= step
    assert min(lo) < -0.25 and max(hi) > 0.25


def test_sky_runs_from_its_top_colour_to_its_horizon_colour_and_is_the_haziest():
    """`sky` is the colour at the top of the image and at the horizon (a vertical gradient); the sky is the
    farthest thing, so it takes the full `haze` blend towards `haze_colour`."""
    style = dataclasses.replace(PLAIN, sky=((0, 0, 250), (250, 0, 0)))
    hazy = dataclasses.replace(style, haze=0.5, haze_colour=(0, 250, 0))
    for i in range(3):
        image, label = render_scene(np.random.default_rng([0, 0, 0, i]), style)
        red, sky = image[..., 0].astype(np.float64), label == ID["sky"]
        assert sky[0].any()
        assert (np.abs(image[0][sky[0]].astype(np.float64) - [0, 0, 250]) <= 6).all()  # t = 0.5 / horizon row
        rows = np.nonzero(sky.any(1))[0]
        assert red[rows[-1]][sky[rows[-1]]].min() > 0.4 * 250   # the skyline stands at most 10 % above the horizon
        for col in range(image.shape[1]):
            assert (np.diff(red[sky[:, col], col]) >= 0).all()   # redder towards the horizon
        top = render_scene(np.random.default_rng([0, 0, 0, i]), hazy)[0][0][sky[0]].astype(np.float64)
        assert (np.abs(top - [0, 125, 125]) <= 4).all()


def test_a_pole_stands_where_the_pinhole_camera_puts_it():
    """A pinhole camera 1.6 m above the ground with focal length `FOCAL` × width: a pole at lateral x, depth z
    has its foot f·1.6/z rows below the horizon, its axis f·x/z columns right of the vanishing point, and is
    0.44 m wide."""
    style = dataclasses.replace(PLAIN, p_sign=0.0, p_light=0.0)
    scene = _Scene(np.random.default_rng(0), style, 256, 128)
    scene._draw_pole(2.0, 10.0, "pole")
    rows, cols = np.nonzero(scene.label == ID["pole"])
    s = FOCAL * 256 / 10.0  # pixels per metre at 10 m
    assert abs(rows.max() + 1 - (scene.yh + 1.6 * s)) <= 1
    assert abs((cols.min() + cols.max() + 1) / 2 - (scene.vx + 2.0 * s)) <= 1
    assert abs(cols.max() + 1 - cols.min() - 0.44 * s) <= 1.5


def test_rects_and_ellipses_keep_at_least_a_pixel():
    """Boxes are at least one pixel wide and tall and ellipses keep a radius of 0.6 px, so far / thin things never
    vanish (scene.py `rect`, `ellipse`); an ellipse is rx wide and ry tall."""
    scene = _Scene(np.random.default_rng(0), PLAIN, 32, 16)
    for cx, cy in ((10.0, 5.0), (10.3, 5.2), (10.5, 5.5), (9.9, 6.0)):
        assert scene.rect(cx, 0.0, cy, cy).sum() >= 1
        assert scene.rect(cx, 0.01, cy - 0.01, cy + 0.01).sum() >= 1
        assert (scene.ellipse(cx, cy, 0.01, 0.01) == scene.ellipse(cx, cy, 0.6, 0.6)).all()
    assert scene.ellipse(10.3, 5.2, 0.01, 0.01).sum() == 1
    rows, cols = np.nonzero(scene.ellipse(16.0, 8.0, 10.0, 3.0))
    assert cols.max() + 1 - cols.min() == 20 and rows.max() + 1 - rows.min() == 6
    assert scene.rect(16.0, 4.0, 2.0, 5.0).sum() == 8 * 3
    far = _Scene(np.random.default_rng(0), dataclasses.replace(PLAIN, p_sign=0.0, p_light=0.0), 64, 32)
    far._draw_pole(3.0, 400.0, "pole")   # 0.44 m at 400 m: a twentieth of a pixel
    assert (far.label == ID["pole"]).sum() >= 1


def test_ground_fills_the_view_below_the_horizon_at_its_depth():
    """The ground plane seen from 1.6 m: every pixel below the horizon is ground or stands on it (no sky), each
    road / sidewalk / grass pixel lies at depth f·1.6 / (rows below the horizon), and every depth is positive, the
    sky's far away (spcl/toy/__init__.py: haze grows with depth)."""
    for i in range(4):
        scene = _Scene(np.random.default_rng([0, 1, 0, i]), TARGET_STYLE, 128, 64)
        scene.draw_background()
        scene.draw_things()
        below = scene.yy > scene.yh
        assert not (below & (scene.label == ID["sky"])).any()
        ground = np.isin(scene.label, [ID["road"], ID["sidewalk"], ID["terrain"]])
        assert ground.any()
        want = scene.f * 1.6 / (scene.yy[ground] - scene.yh)
        np.testing.assert_allclose(scene.depth[ground], want, rtol=1e-4)
        sky = scene.label == ID["sky"]
        assert (scene.depth > 0).all() and (scene.depth[sky] >= 1e4).all()
        built = np.isin(scene.label, [ID["building"], ID["vegetation"]])
        assert scene.depth[built].min() > 4.0  # facades stand beyond the sidewalks, trees 5 m away or more


def _probe_style(car_shape: str):
    """PLAIN with a distinct flat colour per colour key, so every painted colour names what was drawn, and every
    optional thing frequent."""
    keys = sorted(SOURCE_STYLE.colours)
    colours = {k: ((37 * i + 11) % 256 // 2 + 100, (91 * i + 50) % 256 // 2 + 100, 240 - 6 * i)
               for i, k in enumerate(keys)}
    return dataclasses.replace(PLAIN, colours={k: (c,) for k, c in colours.items()}, sky=((0, 0, 0), (0, 0, 0)),
                               window=(60, 0, 120), marking_colour=(0, 120, 0), car_shape=car_shape, p_rider=1.0,
                               p_truck=1.0, p_bus=1.0, p_light=0.7, p_sign=0.7, p_wall=0.7, p_fence=0.7,
                               num_persons=(2, 4), num_bicycles=(1, 2), num_trees=(1, 3))


def _painted_colours(style) -> dict[int, np.ndarray]:
    """labelId -> the colours (K×3) scene.py paints with that label in a flat `style` (the facades of the
    right side shaded by 0.85, fence slats by 0.65)."""
    c = {k: np.array(v[0], np.float64) for k, v in style.colours.items()}
    win, shaded = np.array(style.window, np.float64), (lambda *cs: [x * f for x in cs for f in (1.0, 0.85)])
    fixed = {"trunk": (80, 60, 40), "lamp": (250, 30, 30) if style.car_shape == "boxy" else (120, 30, 30),
             "wheel": (25, 25, 25), "chassis": (30, 30, 30), "go": (60, 220, 80), "stop": (230, 40, 30)}
    fx = {k: np.array(v, np.float64) for k, v in fixed.items()}
    person = [c["person_top"], c["person_bottom"], c["skin"]]
    allowed = {
        "sky": [np.array(style.sky[0], np.float64)], "road": [c["road"], np.array(style.marking_colour, float)],
        "sidewalk": [c["sidewalk"]], "terrain": [c["terrain"]], "building": shaded(c["building"], win),
        "vegetation": shaded(c["vegetation"]) + [fx["trunk"]], "wall": shaded(c["wall"]),
        "fence": shaded(c["fence"], 0.65 * c["fence"]), "pole": [c["pole"]], "sign": [c["sign"]],
        "light": [c["light"], fx["go"], fx["stop"]], "person": person, "rider": person,
        "car": [c["car"], win, fx["lamp"], fx["wheel"]], "truck": [c["truck"], fx["chassis"]],
        "bus": [c["bus"], fx["chassis"], win], "bicycle": [c["bicycle"]], "motorcycle": [c["motorcycle"]]}
    return {ID[k]: np.rint(np.stack(v)) for k, v in allowed.items()}


@pytest.mark.parametrize("car_shape", ["boxy", "round"])
def test_labels_agree_with_what_is_painted(car_shape):
    """Every pixel's labelId is the class whose colour was painted there (labels and pixels come from the same
    masks), over scenes with every optional thing frequent."""
    style = _probe_style(car_shape)
    allowed = _painted_colours(style)
    owners = np.concatenate([np.full(len(v), k) for k, v in allowed.items()])
    palette = np.concatenate(list(allowed.values()))
    gap = np.abs(palette[:, None] - palette[None]).max(-1)
    # The probe's colours tell the classes apart, but for parts they share (glass, chassis, people's clothes).
    assert ((gap == 0) | (gap > 3))[owners[:, None] != owners[None]].all()
    for i in range(6):
        image, label = render_scene(np.random.default_rng([1, 0, 0, i]), style)
        for lid, colours in allowed.items():
            px = image[label == lid].astype(np.float64)
            if len(px):
                dist = np.abs(px[:, None] - colours[None]).max(-1).min(1)
                assert dist.max() <= 1, (lid, px[dist.argmax()])


def test_facades_buildings_windows_vegetation_walls_fences_and_the_sun_from_the_left():
    """Facades: buildings with windows (glass colour) and vegetation, at the depth of a plane `facade_x` metres to
    the side; a wall / fence in front with probability `p_wall` / `p_fence` per side, fences with slats (a shared
    shape cue); the right side shaded (the sun comes from the left in both domains)."""
    for p in (0.0, 1.0):
        style = dataclasses.replace(_probe_style("boxy"), p_wall=p, p_fence=p)
        base = {k: np.array(v[0], np.float32) for k, v in style.colours.items()}
        seen: dict[str, set] = {"building": set(), "vegetation": set(), "wall": set(), "fence": set()}
        for i in range(6):
            scene = _Scene(np.random.default_rng([2, 0, 0, i]), style, 128, 64)
            scene.facade_x = (-6.0, 7.0)
            for side in (0, 1):
                scene._draw_facades(side)
            for key in seen:
                m = scene.label == ID[key]
                for side, cols in ((0, scene.xx < scene.vx), (1, scene.xx > scene.vx)):
                    shade = (1.0, 0.85)[side]
                    colours = {tuple(c) for c in np.rint(scene.rgb[m & cols]).astype(int).tolist()}
                    named = {"base": np.rint(base[key] * shade), "glass": np.rint(np.float32(style.window) * shade),
                             "slat": np.rint(base[key] * shade * 0.65)}
                    seen[key] |= {n for n, c in named.items() if tuple(c.astype(int)) in colours}
                    if m[cols].any():
                        d = scene.depth[m & cols]
                        z = scene.f * abs(scene.facade_x[side]) / np.abs(scene.xx - scene.vx)[m & cols]
                        assert ((d <= z * 1.001) & (d > 0)).all()   # the facade plane, or a wall 0.3 m in front
        assert {"base", "glass"} <= seen["building"] and "base" in seen["vegetation"]
        if p:
            assert "base" in seen["wall"] and {"base", "slat"} <= seen["fence"]
        else:
            assert not seen["wall"] and not seen["fence"]


def test_lane_markings_are_a_dashed_centre_line_and_solid_edge_lines():
    """Road markings in both domains (scene.py `_ground_tex`): a centre line dashed every 3 m and solid lines
    0.3 m inside the road edges, in `marking_colour`."""
    scene = _Scene(np.random.default_rng(0), PLAIN, 32, 16)
    z = np.linspace(0.05, 11.95, 120)[None]
    centre, half = 0.5, 4.0

    def marked(x):
        out = scene._ground_tex("road", np.full_like(z, x), z, centre, half)
        return (out == np.float32(PLAIN.marking_colour)).all(-1)[0]

    assert abs(marked(centre).mean() - 0.5) < 0.02 and marked(centre)[z[0] % 6 < 3].all()
    assert marked(centre + half - 0.3).all() and marked(centre - half + 0.3).all()
    assert not marked(centre + 1.0).any() and not marked(centre + half).any()


def test_each_instance_draws_one_candidate_colour_with_multiplicative_jitter():
    """`colours` gives candidate base colours of each class, one drawn per instance, times (1 + N(0,
    colour_jitter)) (styles.py `DomainStyle`)."""
    candidates = ((200, 40, 40), (40, 40, 200), (40, 200, 40))
    flat = dataclasses.replace(PLAIN, colours={**PLAIN.colours, "sidewalk": candidates})
    found = set()
    for i in range(24):
        image, label = render_scene(np.random.default_rng([3, 0, 0, i]), flat, (64, 32))
        found |= {tuple(c) for c in image[label == ID["sidewalk"]].tolist()}
    assert found == set(candidates)
    ratios = []
    jittered = dataclasses.replace(PLAIN, colour_jitter=0.1, colours={**PLAIN.colours, "sidewalk": ((150, 100, 50),)})
    for i in range(30):
        image, label = render_scene(np.random.default_rng([3, 0, 0, i]), jittered, (64, 32))
        px = image[label == ID["sidewalk"]].astype(np.float64)
        ratio = np.median(px, 0) / [150, 100, 50]
        assert np.ptp(ratio) < 0.03   # one gain for all three channels
        ratios.append(ratio.mean())
    assert 0.06 < np.std(ratios) < 0.14 and abs(np.mean(ratios) - 1) < 0.05


def test_p_terrain_puts_grass_strips_between_sidewalks_and_facades():
    """`p_terrain` is the chance, per side, of a grass strip between the sidewalk and the facades (left and right
    of the road)."""
    def terrain(p: float) -> tuple[float, float]:
        left = right = 0.0
        for i in range(8):
            scene = _Scene(np.random.default_rng([4, 0, 0, i]), dataclasses.replace(PLAIN, p_terrain=p), 128, 64)
            scene.draw_background()
            grass = scene.label == ID["terrain"]
            left += (grass & (scene.xx < scene.vx)).mean() / 8
            right += (grass & (scene.xx > scene.vx)).mean() / 8
        return left, right

    (l0, r0), (l1, r1) = terrain(0.0), terrain(1.0)
    assert l1 > 2 * l0 + 0.005 and r1 > 2 * r0 + 0.005


def _blank(style=None, size=(256, 128)) -> _Scene:
    return _Scene(np.random.default_rng(0), style or _probe_style("boxy"), *size)


def test_structured_textures_only_where_the_style_says():
    """`structured_textures`: bricks and floor stripes on buildings, pavement tiles on sidewalks, mown grass
    stripes, leaf speckle on facades and tree crowns in the source; flat surfaces without them."""
    keys = ("building", "sidewalk", "terrain", "vegetation")
    shades = {}
    for structured in (False, True):
        style = dataclasses.replace(_probe_style("boxy"), structured_textures=structured, p_terrain=1.0,
                                    num_trees=(2, 3))
        for k in keys:
            shades[structured, k] = 0
        for i in range(4):
            image, label = render_scene(np.random.default_rng([5, 0, 0, i]), style)
            for k in keys:
                n = len(np.unique(image[label == ID[k]].reshape(-1, 3), axis=0))
                shades[structured, k] = max(shades[structured, k], n)
    # Flat: one colour per instance (and the shaded right side, glass, trunks); textures add shades to each.
    assert all(shades[True, k] > shades[False, k] for k in keys), shades
    assert shades[True, "building"] >= 8 and shades[True, "vegetation"] > 12, shades
    tree = _blank(dataclasses.replace(_probe_style("boxy"), structured_textures=True))
    tree._draw_tree(2.0, 10.0, "tree")
    assert len(np.unique(tree.rgb[tree.label == ID["vegetation"]], axis=0)) > 12
    facades = [_Scene(np.random.default_rng([2, 0, 0, i]), tree.style, 128, 64) for i in range(4)]
    for scene in facades:
        scene.facade_x = (-6.0, 7.0)
        scene._draw_facades(0)
    assert max(len(np.unique(sc.rgb[sc.label == ID["vegetation"]], axis=0)) for sc in facades) > 12


def _placed(style, n: int, seed: int = 0) -> list[list[tuple[str, float, float]]]:
    """What `draw_things` places in each of `n` scenes, in drawing order: (kind, lateral x, depth z)."""
    kinds = ("car", "truck", "bus", "person", "rider", "bicycle", "motorcycle", "pole", "tree")
    scenes = []
    for i in range(n):
        scene = _Scene(np.random.default_rng([seed, 0, 0, i]), style, 64, 32)
        scene.draw_background()
        calls: list = []
        for k in kinds:
            setattr(scene, "_draw_" + k, lambda x, z, kind: calls.append((kind, x, z)))
        scene.draw_things()
        scenes.append(calls)
    return scenes


def test_things_counts_probabilities_distances_and_order():
    """`num_*` ranges are inclusive counts per image and `p_*` probabilities (styles.py `DomainStyle`); persons,
    riders and two-wheelers within 22 m, poles within 25 m (spcl/toy/__init__.py, toy-v3 sizes); the lane right in
    front of the camera is kept clear of cars; things are painted far-to-near."""
    style = dataclasses.replace(SOURCE_STYLE, num_cars=(1, 3), num_persons=(0, 2), num_bicycles=(1, 2),
                                num_poles=(2, 3), num_trees=(0, 1), p_truck=1.0, p_bus=0.0, p_rider=1.0,
                                p_motorcycle=0.0)
    scenes = _placed(style, 60)
    for key, kind in (("num_cars", "car"), ("num_persons", "person"), ("num_poles", "pole"), ("num_trees", "tree")):
        lo, hi = getattr(style, key)
        assert {sum(k == kind for k, _, _ in s) for s in scenes} == set(range(lo, hi + 1)), key
    assert {sum(k == "bicycle" for k, _, _ in s) for s in scenes} == {1, 2}   # parked ones
    for s in scenes:
        kinds = [k for k, _, _ in s]
        assert kinds.count("truck") == 1 and "bus" not in kinds and 1 <= kinds.count("rider_bicycle") <= 2
        assert "motorcycle" not in kinds and "rider_motorcycle" not in kinds
        assert [z for *_, z in s] == sorted((z for *_, z in s), reverse=True)
        for kind, x, z in s:
            assert z <= {"person": 22, "rider_bicycle": 22, "bicycle": 22, "pole": 25}.get(kind, 60)
            assert not (kind == "car" and abs(x) < 1.6 and z < 10)
    moto = _placed(dataclasses.replace(style, p_motorcycle=1.0), 10)
    kinds = {k for s in moto for k, _, _ in s}
    assert {"motorcycle", "rider_motorcycle"} <= kinds and not kinds & {"bicycle", "rider_bicycle"}


def test_vehicles_cars_boxy_or_round_with_glass_and_lamps_and_buses_with_a_window_band():
    """Boxy cars with bright tail lights versus rounded cars with dim ones; vehicle glass in `window` colour
    (spcl/toy/__init__.py); a bus has a window band, a truck none."""
    for shape in ("boxy", "round"):
        scene = _blank(_probe_style(shape))
        scene._draw_car(0.0, 8.0, "car")
        cx, base, s = scene.project(0.0, 8.0)
        car = scene.label == ID["car"]
        rows = np.nonzero(car.any(1))[0]
        widths = car.sum(1)[rows]
        glass = (scene.rgb == np.float32(scene.style.window)).all(-1) & car
        lamps = (scene.rgb == np.float32((250, 30, 30) if shape == "boxy" else (120, 30, 30))).all(-1) & car
        assert glass.any() and lamps.any()
        if shape == "boxy":
            assert widths[0] == widths[: int(0.4 * s)].max()   # a flat-topped cabin
        else:
            assert widths[0] < 0.5 * widths[: int(0.4 * s)].max()
    for kind in ("truck", "bus"):
        scene = _blank()
        scene._draw_truck(0.0, 12.0, kind)
        glass = (scene.rgb == np.float32(scene.style.window)).all(-1) & (scene.label == ID[kind])
        assert glass.any() == (kind == "bus")


def test_people_riders_two_wheelers_poles_and_trees_by_shape():
    """A person has legs to the ground and a head (skin); a rider sits on a bicycle / motorcycle (no legs, above
    the wheels); near two-wheelers have ring wheels; a pole carries a sign with probability `p_sign` and a light
    with `p_light`; a tree has a trunk to the ground under its crown."""
    style = _probe_style("boxy")
    skin = np.float32(style.colours["skin"][0])
    scene = _blank()
    scene._draw_person(0.0, 6.0, "person")
    cx, base, s = scene.project(0.0, 6.0)
    person = scene.label == ID["person"]
    assert np.nonzero(person.any(1))[0].max() + 1 >= base - 1 and (scene.rgb[person] == skin).all(-1).any()
    for vehicle in ("bicycle", "motorcycle"):
        scene = _blank()
        scene._draw_rider(0.0, 6.0, "rider_" + vehicle)
        rider, bike = scene.label == ID["rider"], scene.label == ID[vehicle]
        assert bike.any() and (scene.rgb[rider] == skin).all(-1).any()
        assert np.nonzero(rider.any(1))[0].max() < base - 1.0 * s   # seated: nothing of the rider below 1 m
        r = (0.34 if vehicle == "bicycle" else 0.32) * s
        for sx in (-1, 1):  # the wheel's hub is a hole in its ring
            hub, row = cx + sx * 0.55 * s, int(base - r)
            assert not bike[row, int(hub)] and bike[row, int(hub - r + 1)]
    for p in (0.0, 1.0):
        scene = _blank(dataclasses.replace(style, p_sign=p, p_light=p))
        scene._draw_pole(2.0, 10.0, "pole")
        assert (scene.label == ID["sign"]).any() == bool(p) and (scene.label == ID["light"]).any() == bool(p)
    scene = _blank()
    scene._draw_tree(2.0, 10.0, "tree")
    cx, base, s = scene.project(2.0, 10.0)
    trunk = (scene.rgb == np.float32((80, 60, 40))).all(-1) & (scene.label == ID["vegetation"])
    assert trunk.any() and np.nonzero(trunk.any(1))[0].max() + 1 >= base - 1


def test_ego_hood_and_unlabeled_band_follow_their_probabilities(renders):
    """`p_hood`: an ego-car hood (labelId 1) at the bottom, bulging upwards in the middle; `p_void_band`: a thin
    unlabeled band (labelId 0) on the bottom rows. In the domains: a hood in most target images, never in the
    source; the band in some source images, never in the target (spcl/toy/__init__.py)."""
    for p_hood, p_band in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
        style = dataclasses.replace(PLAIN, p_hood=p_hood, p_void_band=p_band)
        for i in range(4):
            label = render_scene(np.random.default_rng([6, 0, 0, i]), style)[1]
            hood = label == EGO_VEHICLE_ID
            assert hood.any() == bool(p_hood) and (label[-1] == UNLABELED_ID).all() == bool(p_band)
            assert not (label[:-2] == UNLABELED_ID).any()
            if p_hood:
                height = hood.sum(0)
                assert hood[-1].all() and height[len(height) // 2] > height[0] + 1
    hoods = {name: [(lab == EGO_VEHICLE_ID).any() for lab in labels] for name, (_, labels) in renders.items()}
    bands = {name: [(lab[-1] == UNLABELED_ID).all() for lab in labels] for name, (_, labels) in renders.items()}
    assert np.mean(hoods[TARGET_STYLE.name]) > 0.5 and not any(hoods[SOURCE_STYLE.name])
    assert 0 < np.mean(bands[SOURCE_STYLE.name]) < 1 and not any(bands[TARGET_STYLE.name])


def test_the_target_look_differs_from_the_source_as_documented():
    """spcl/toy/__init__.py: muted camera colours (each colourful class less saturated), a paler sky and darker
    duller trees; structured textures in the source, smooth mottled surfaces in the target; boxy cars versus round;
    blue versus near-black glass; the target darker, less saturated, hazier, vignetted, blurred and noisier; an
    ego-car hood in most target images and an unlabeled band in some source images; far things fade towards a pale
    haze colour; more vehicles in the source, more people in the target."""
    s, t = SOURCE_STYLE, TARGET_STYLE

    def chroma(colours) -> float:
        c = np.array(colours, np.float64)
        return float((c.max(-1) - c.min(-1)).mean())

    for key, colours in s.colours.items():
        if chroma(colours) > 30:
            assert chroma(t.colours[key]) < chroma(colours), key
    assert chroma(t.sky) < chroma(s.sky) and np.mean(t.sky) > np.mean(s.sky)
    assert np.mean(t.colours["vegetation"]) < np.mean(s.colours["vegetation"])
    assert s.structured_textures and not t.structured_textures and t.stain > s.stain
    assert (s.car_shape, t.car_shape) == ("boxy", "round")
    assert s.window[2] > s.window[0] + 40 and max(t.window) < 60
    assert t.brightness < s.brightness and t.saturation < s.saturation and t.haze > s.haze
    assert t.vignette > s.vignette and t.blur_sigma > s.blur_sigma and t.noise_std > s.noise_std
    assert t.p_hood > 0.5 and s.p_hood == 0 and 0 < s.p_void_band < 1 and t.p_void_band == 0
    assert min(s.haze_colour) > 180 and min(t.haze_colour) > 180   # far things fade towards a pale haze
    # More cars, trucks and buses in the source; more persons and riders in the target.
    assert np.mean(s.num_cars) > np.mean(t.num_cars) and s.p_truck > t.p_truck and s.p_bus > t.p_bus
    assert np.mean(t.num_persons) > np.mean(s.num_persons) and t.p_rider > s.p_rider


def test_odd_target_counts_fill_the_cities_in_order_and_bad_arguments_are_refused(tmp_path):
    """Target images are split over the cities, the first ones taking the remainder (3 train images: two in
    toytown, one in mockburg); negative seeds or counts are refused before anything is written."""
    info = generate_toy_dataset(tmp_path / "odd", num_source=0, num_target_train=3, num_target_val=1, size=(16, 8))
    assert info["cityscapes"] == str(tmp_path / "odd" / "cityscapes") and info["gta5"] == str(tmp_path / "odd/gta5")
    names = {p.name for p in (tmp_path / "odd/cityscapes/leftImg8bit/train").rglob("*.png")}
    assert names == {"toytown_000000_000000_leftImg8bit.png", "toytown_000000_000001_leftImg8bit.png",
                     "mockburg_000000_000000_leftImg8bit.png"}
    for bad in (dict(seed=-1), dict(num_source=-1), dict(num_target_train=-1), dict(num_target_val=-1)):
        with pytest.raises(ValueError, match="non-negative"):
            generate_toy_dataset(tmp_path / "bad", **{**SMALL, **bad})
        assert not (tmp_path / "bad" / "toy_manifest.json").exists()


def test_manifest_changes_that_trigger_regeneration(tmp_path, monkeypatch):
    """The manifest records the arguments (the size included), TOY_VERSION and a fingerprint of both styles, and
    a finished flag: a new size, a changed target style, an unfinished generation or an unreadable manifest
    regenerate; nothing else does (spcl/toy/writer.py `generate_toy_dataset`)."""
    from spcl.toy import writer

    args = dict(num_source=1, num_target_train=1, num_target_val=0, size=(32, 16))
    manifest = tmp_path / "toy_manifest.json"
    assert generate_toy_dataset(tmp_path, **args)["generated"]
    assert generate_toy_dataset(tmp_path, **{**args, "size": (16, 8)})["generated"]
    assert Image.open(tmp_path / "gta5/images/00001.png").size == (16, 8)
    args["size"] = (16, 8)
    assert not generate_toy_dataset(tmp_path, **args)["generated"]
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    assert generate_toy_dataset(tmp_path, **args)["generated"]
    manifest.write_text("{not json")
    assert generate_toy_dataset(tmp_path, **args)["generated"]
    assert not generate_toy_dataset(tmp_path, **args)["generated"]
    monkeypatch.setattr(writer, "TARGET_STYLE", dataclasses.replace(TARGET_STYLE, noise_std=0.0))
    assert generate_toy_dataset(tmp_path, **args)["generated"]
