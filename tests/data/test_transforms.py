"""Paired transforms (docs/method.md "Inputs"): nearest labels, scale-crop padding, consistent flips, seeded
determinism and the normalisation numbers."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from spcl.config import load_config
from spcl.data import build_transform
from spcl.data import transforms as T


def _pair(w=20, h=10, seed=0, values=(0, 3, 7, 18, 255)):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    label = rng.choice(values, size=(h, w)).astype(np.uint8)
    return img, label


@pytest.mark.parametrize("size", [(33, 17), (7, 3), (20, 10), (40, 9)])
def test_resize_label_values_come_from_the_input(size):
    img, label = _pair()
    out_img, out_label = T.Resize(size)(img, label, random.Random(0))
    assert out_img.size == size and out_label.shape == (size[1], size[0]) and out_label.dtype == np.uint8
    assert set(np.unique(out_label)) <= set(np.unique(label))


def test_resize_keeps_label_when_asked():
    img, label = _pair()
    out_img, out_label = T.Resize((8, 4), resize_label=False)(img, label, random.Random(0))
    assert out_img.size == (8, 4)
    assert out_label is label


def test_random_scale_crop_sizes_and_label_values():
    img, label = _pair(40, 20)
    t = T.RandomScaleCrop((40, 20), (0.5, 1.5), (16, 12))
    for seed in range(30):
        out_img, out_label = t(img, label, random.Random(seed))
        assert out_img.size == (16, 12)
        assert out_label.shape == (12, 16)
        assert set(np.unique(out_label)) <= set(np.unique(label)) | {255}


def test_random_scale_crop_pads_label_with_ignore_and_image_with_zero():
    # scale 0.25 of 40x20 = 10x5, crop 16x12: everything beyond 10x5 is padding
    img = Image.fromarray(np.full((20, 40, 3), 200, np.uint8))
    label = np.full((20, 40), 4, np.uint8)
    out_img, out_label = T.RandomScaleCrop((40, 20), (0.25, 0.25), (16, 12))(img, label, random.Random(0))
    arr = np.asarray(out_img)
    assert out_img.size == (16, 12) and out_label.shape == (12, 16)
    assert (out_label[:5, :10] == 4).all()
    assert (out_label[5:, :] == 255).all() and (out_label[:, 10:] == 255).all()
    assert (arr[:5, :10] == 200).all() and (arr[5:, :] == 0).all() and (arr[:, 10:] == 0).all()


def test_random_scale_crop_at_scale_one_is_an_exact_window():
    img, label = _pair(30, 16, seed=3)
    t = T.RandomScaleCrop((30, 16), (1.0, 1.0), (10, 8))
    rng = random.Random(5)
    out_img, out_label = t(img, label, rng)
    # replay the random draws: uniform (scale), then x, then y
    r = random.Random(5)
    r.uniform(1.0, 1.0)
    x, y = r.randint(0, 20), r.randint(0, 8)
    np.testing.assert_array_equal(out_label, label[y:y + 8, x:x + 10])
    np.testing.assert_array_equal(np.asarray(out_img), np.asarray(img)[y:y + 8, x:x + 10])


def test_flip_is_consistent():
    img, label = _pair(9, 5, seed=1)
    flip = T.RandomHorizontalFlip(1.0)
    out_img, out_label = flip(img, label, random.Random(0))
    a_img, a_out = np.asarray(img), np.asarray(out_img)
    assert (a_out[2, 0] == a_img[2, 8]).all() and (a_out[4, 3] == a_img[4, 5]).all()
    assert out_label[2, 0] == label[2, 8] and out_label[4, 3] == label[4, 5]
    np.testing.assert_array_equal(out_label, label[:, ::-1])
    np.testing.assert_array_equal(a_out, a_img[:, ::-1])
    assert out_label.flags["C_CONTIGUOUS"]
    # p = 0: untouched
    same_img, same_label = T.RandomHorizontalFlip(0.0)(img, label, random.Random(0))
    assert same_img is img and same_label is label


def test_flip_probability_roughly_half():
    img, label = _pair(4, 2, seed=2)
    flipped = 0
    for seed in range(400):
        _, out = T.RandomHorizontalFlip(0.5)(img, label, random.Random(seed))
        flipped += not np.array_equal(out, label)
    assert 150 < flipped < 250


def test_compose_is_deterministic_given_the_rng_seed():
    cfg = load_config("", ["INPUT.SELF_TRAIN_BASE_SIZE", "[40, 20]", "INPUT.SELF_TRAIN_CROP", "[16, 8]"])
    t = build_transform(cfg, "self_train")
    img, label = _pair(40, 20, seed=4)
    a = t(img, label.copy(), random.Random(42))
    b = t(img, label.copy(), random.Random(42))
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    assert torch.equal(a[1], b[1])
    outs = [t(img, label.copy(), random.Random(s)) for s in range(6)]
    assert any(not torch.equal(outs[0][0], o[0]) for o in outs[1:])
    assert a[0].shape == (3, 8, 16) and a[1].shape == (8, 16) and a[1].dtype == torch.int64
    assert set(a[1].unique().tolist()) <= set(np.unique(label).tolist()) | {255}


def test_color_jitter_changes_image_not_label_and_is_seeded():
    img, label = _pair(8, 4, seed=5)
    jit = T.ColorJitter(0.5, 0.5, 0.5, 0.2)
    a_img, a_label = jit(img, label, random.Random(7))
    b_img, _ = jit(img, label, random.Random(7))
    assert a_label is label
    np.testing.assert_array_equal(np.asarray(a_img), np.asarray(b_img))
    assert not np.array_equal(np.asarray(a_img), np.asarray(img))


def test_brightness_only_jitter_matches_its_factor():
    img = Image.fromarray(np.full((2, 3, 3), 100, np.uint8))
    out, _ = T.ColorJitter(0.5, 0, 0, 0)(img, None, random.Random(3))
    f = random.Random(3).uniform(0.5, 1.5)
    assert f != 1.0
    assert np.abs(np.asarray(out).astype(float) - min(255.0, 100 * f)).max() <= 1.0


@pytest.mark.parametrize("which", ["contrast", "saturation", "hue"])
def test_each_jitter_draws_its_factor_from_its_own_range(which):
    """One parameter set: the factor is uniform in [1 − c, 1 + c] (hue: [−h, h]) of that parameter, the
    other parameters 0; the image is torchvision's adjustment by it."""
    import torchvision.transforms.functional as TF

    img, _ = _pair(8, 4, seed=6)
    params = {"contrast": (0, 0.4, 0, 0), "saturation": (0, 0, 0.4, 0), "hue": (0, 0, 0, 0.15)}[which]
    out, _ = T.ColorJitter(*params)(img, None, random.Random(11))
    f = random.Random(11).uniform(-0.15, 0.15) if which == "hue" else random.Random(11).uniform(0.6, 1.4)
    expected = getattr(TF, f"adjust_{which}")(img, f)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_jitter_applies_its_four_adjustments_in_a_seeded_random_order():
    """In a random order, as torchvision's ColorJitter applies them: the four factors are drawn (brightness,
    contrast, saturation, hue), then the order is shuffled with the same generator. Replayed here by hand; over
    the seeds more than one order occurs, and the orders give different images."""
    import torchvision.transforms.functional as TF

    img, _ = _pair(8, 4, seed=5)
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    orders = set()
    for seed in range(12):
        rng = random.Random(seed)
        factors = [rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), rng.uniform(-0.2, 0.2)]
        order = [0, 1, 2, 3]
        rng.shuffle(order)
        orders.add(tuple(order))
        expected = img
        for i in order:
            expected = adjust[i](expected, factors[i])
        out, _ = T.ColorJitter(0.5, 0.5, 0.5, 0.2)(img, None, random.Random(seed))
        np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    assert len(orders) > 1


def test_to_tensor_normalisation_numbers():
    arr = np.array([[[0, 128, 255], [255, 255, 255]]], dtype=np.uint8)  # 1x2 image
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    t, lt = T.ToTensor(mean, std)(Image.fromarray(arr), np.array([[1, 255]], np.uint8), None)
    assert t.shape == (3, 1, 2) and t.dtype == torch.float32
    assert t[0, 0, 0].item() == pytest.approx((0 - 0.485) / 0.229, abs=1e-6)
    assert t[1, 0, 0].item() == pytest.approx((128 / 255 - 0.456) / 0.224, abs=1e-6)
    assert t[2, 0, 0].item() == pytest.approx((1 - 0.406) / 0.225, abs=1e-6)
    assert t[0, 0, 1].item() == pytest.approx((1 - 0.485) / 0.229, abs=1e-6)
    assert lt.dtype == torch.int64 and lt.tolist() == [[1, 255]]
    # Caffe style: BGR, 0-255, mean (given in RGB, 0-1 units) subtracted
    t2, none = T.ToTensor(mean, std, to_bgr255=True)(Image.fromarray(arr), None, None)
    assert none is None
    assert t2[0, 0, 0].item() == pytest.approx(255 - 0.406 * 255, abs=1e-4)  # B channel first
    assert t2[2, 0, 0].item() == pytest.approx(0 - 0.485 * 255, abs=1e-4)


def test_build_transform_roles():
    cfg = load_config("", ["INPUT.SOURCE_SIZE", "[12, 6]", "INPUT.TARGET_SIZE", "[10, 4]", "INPUT.TEST_SIZE",
                           "[8, 4]"])
    img, label = _pair(20, 10)
    for role, size, label_size in (("source", (12, 6), (6, 12)), ("target", (10, 4), (4, 10)),
                                   ("test", (8, 4), (10, 20)), ("source_eval", (12, 6), (10, 20))):
        ti, tl = build_transform(cfg, role)(img, label.copy(), random.Random(0))
        assert ti.shape == (3, size[1], size[0]) and tl.shape == label_size, role
    with pytest.raises(ValueError, match="nope"):
        build_transform(cfg, "nope")


def test_each_role_reads_its_own_flip_and_jitter_keys():
    """docs/method.md "Inputs" / spcl/config/defaults.py: the self-training transform flips with
    INPUT.SELF_TRAIN_FLIP_PROB (not the warm-up INPUT.FLIP_PROB), and the target transform jitters colours only
    with INPUT.TARGET_JITTER (the source one with INPUT.SOURCE_JITTER). Each key is set against the other here,
    so a role reading the other's key changes the output."""
    img, label = _pair(20, 10)
    common = ["INPUT.SELF_TRAIN_BASE_SIZE", "[20, 10]", "INPUT.SELF_TRAIN_CROP", "[20, 10]", "INPUT.SELF_TRAIN_SCALE",
              "[1.0, 1.0]", "INPUT.SELF_TRAIN_JITTER", "False", "INPUT.SOURCE_SIZE", "[20, 10]", "INPUT.TARGET_SIZE",
              "[20, 10]", "INPUT.COLOR_JITTER", "[0.5, 0.5, 0.5, 0.0]"]
    for self_flip, warm_flip in ((0.0, 1.0), (1.0, 0.0)):
        flips = ["INPUT.SELF_TRAIN_FLIP_PROB", str(self_flip), "INPUT.FLIP_PROB", str(warm_flip)]
        cfg = load_config("", common + flips)
        want = label[:, ::-1] if self_flip else label
        for seed in range(3):
            _, tl = build_transform(cfg, "self_train")(img, label.copy(), random.Random(seed))
            np.testing.assert_array_equal(tl.numpy(), want.astype(np.int64))
    for role, own, other in (("target", "INPUT.TARGET_JITTER", "INPUT.SOURCE_JITTER"),
                             ("source", "INPUT.SOURCE_JITTER", "INPUT.TARGET_JITTER")):
        cfg = load_config("", common + ["INPUT.FLIP_PROB", "0.0", own, "False", other, "True"])
        outs = [build_transform(cfg, role)(img, label.copy(), random.Random(s))[0] for s in range(4)]
        assert all(torch.equal(outs[0], o) for o in outs[1:]), role  # no jitter: one output whatever the seed
        cfg = load_config("", common + ["INPUT.FLIP_PROB", "0.0", own, "True", other, "False"])
        outs = [build_transform(cfg, role)(img, label.copy(), random.Random(s))[0] for s in range(4)]
        assert any(not torch.equal(outs[0], o) for o in outs[1:]), role
