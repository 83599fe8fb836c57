"""SemSegEvaluator against a slow per-pixel reference; NaN classes; tail / 13-class means; batching."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spcl.evaluation import SemSegEvaluator, format_table


def slow_metrics(pred: np.ndarray, label: np.ndarray, k: int, ignore: int = 255):
    """IoU and Acc per class (percent, NaN where undefined) with python loops over pixels."""
    tp, fp, fn = [0] * k, [0] * k, [0] * k
    total = correct = 0
    for p, g in zip(pred.reshape(-1).tolist(), label.reshape(-1).tolist()):
        if g == ignore:
            continue
        total += 1
        if p == g:
            tp[g] += 1
            correct += 1
        else:
            fn[g] += 1
            fp[p] += 1
    iou = [100.0 * tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else float("nan") for c in range(k)]
    acc = [100.0 * tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else float("nan") for c in range(k)]
    return iou, acc, 100.0 * correct / total, total


def _assert_close_nan(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-9), (a, b)


@pytest.mark.parametrize("k", [19, 16, 5])
def test_matches_slow_reference(k):
    rng = np.random.default_rng(k)
    label = rng.integers(0, k, size=(3, 17, 23))
    label[rng.random(label.shape) < 0.2] = 255
    pred = np.where(rng.random(label.shape) < 0.6, np.where(label == 255, 0, label), rng.integers(0, k, label.shape))
    ev = SemSegEvaluator(k)
    ev.process(torch.from_numpy(pred), torch.from_numpy(label))
    m = ev.evaluate()
    iou, acc, aacc, total = slow_metrics(pred, label, k)
    _assert_close_nan(m["IoU"], iou)
    _assert_close_nan(m["Acc"], acc)
    assert m["aAcc"] == pytest.approx(aacc)
    assert m["num_pixels"] == total == int((label != 255).sum())
    assert m["mIoU"] == pytest.approx(np.nanmean(iou))
    assert m["mAcc"] == pytest.approx(np.nanmean(acc))
    assert len(m["class_names"]) == k
    # the confusion matrix itself, entry by entry
    conf = np.zeros((k, k), np.int64)
    for p, g in zip(pred.reshape(-1), label.reshape(-1)):
        if g != 255:
            conf[g, p] += 1
    np.testing.assert_array_equal(ev.confusion.numpy(), conf)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    # 4 classes; class 2 never in the ground truth nor predicted; class 3 predicted but never in GT
    label = torch.tensor([[0, 0, 1, 1, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 3, 2, 2]])  # predictions on ignored pixels do not count
    ev = SemSegEvaluator(4)
    ev.process(pred, label)
    m = ev.evaluate()
    # class 0: tp 1, fn 1, fp 0 → 1/2; class 1: tp 1, fn 1 (→3), fp 1 (from 0) → 1/3; class 3: 0/1
    assert m["IoU"][0] == pytest.approx(50.0)
    assert m["IoU"][1] == pytest.approx(100 / 3)
    assert math.isnan(m["IoU"][2])
    assert m["IoU"][3] == 0.0
    assert math.isnan(m["Acc"][2]) and math.isnan(m["Acc"][3])
    assert m["mIoU"] == pytest.approx((50 + 100 / 3 + 0) / 3)
    assert m["mAcc"] == pytest.approx((50 + 50) / 2)
    assert m["aAcc"] == pytest.approx(50.0)
    assert m["num_pixels"] == 4


def _perfect_except(k, wrong: dict):
    """Label image with one 10-pixel block per class; class c gets wrong[c] pixels predicted as c+1."""
    label = np.repeat(np.arange(k), 10)[None]
    pred = label.copy()
    for c, n in wrong.items():
        idx = np.where(label[0] == c)[0][:n]
        pred[0, idx] = (c + 1) % k
    return torch.from_numpy(pred), torch.from_numpy(label)


def test_tail_mean_19_classes():
    # class c has c % 4 wrong pixels (of 10), predicted as c + 1
    k = 19
    wrong = {c: c % 4 for c in range(k)}
    pred, label = _perfect_except(k, wrong)
    ev = SemSegEvaluator(k)
    ev.process(pred, label)
    m = ev.evaluate()
    iou = []
    for c in range(k):
        tp = 10 - wrong[c]
        fp = wrong[(c - 1) % k]
        iou.append(100 * tp / (10 + fp))
    np.testing.assert_allclose(m["IoU"], iou)
    tail = [3, 4, 6, 7, 9, 12, 14, 15, 16, 17, 18]  # wall fence light sign terrain rider truck bus train moto bike
    assert m["mIoU_tail"] == pytest.approx(sum(iou[i] for i in tail) / 11)
    assert m["mIoU"] == pytest.approx(sum(iou) / 19)
    assert "mIoU_13" not in m


def test_13_class_mean_16_classes():
    k = 16
    wrong = {c: (3 * c) % 5 for c in range(k)}
    pred, label = _perfect_except(k, wrong)
    ev = SemSegEvaluator(k)
    ev.process(pred, label)
    m = ev.evaluate()
    iou = [100 * (10 - wrong[c]) / (10 + wrong[(c - 1) % k]) for c in range(k)]
    np.testing.assert_allclose(m["IoU"], iou)
    keep = [c for c in range(16) if c not in (3, 4, 5)]  # minus wall, fence, pole
    assert m["mIoU_13"] == pytest.approx(sum(iou[i] for i in keep) / 13)
    assert "mIoU_tail" not in m


def test_tail_mean_skips_nan_classes():
    label = torch.tensor([[0, 3, 3, 255]])
    pred = torch.tensor([[0, 3, 4, 0]])
    ev = SemSegEvaluator(19)
    ev.process(pred, label)
    m = ev.evaluate()
    # tail classes present: wall (3) IoU 1/2, fence (4) IoU 0/1; the other nine are NaN
    assert m["mIoU_tail"] == pytest.approx((50 + 0) / 2)
    assert m["mIoU"] == pytest.approx((100 + 50 + 0) / 3)


def test_two_batches_equal_one():
    rng = np.random.default_rng(3)
    label = rng.integers(0, 19, size=(4, 9, 11))
    label[rng.random(label.shape) < 0.1] = 255
    pred = rng.integers(0, 19, size=label.shape)
    one = SemSegEvaluator(19)
    one.process(torch.from_numpy(pred), torch.from_numpy(label))
    two = SemSegEvaluator(19)
    two.process(torch.from_numpy(pred[:1]), torch.from_numpy(label[:1]))
    two.process(torch.from_numpy(pred[1:]), torch.from_numpy(label[1:]))
    assert torch.equal(one.confusion, two.confusion)
    a, b = one.evaluate(), two.evaluate()
    _assert_close_nan(a["IoU"], b["IoU"])
    assert a["mIoU"] == b["mIoU"] and a["mIoU_tail"] == b["mIoU_tail"]
    two.reset()
    assert two.confusion.sum() == 0 and math.isnan(two.evaluate()["mIoU"])


def test_errors_and_table():
    ev = SemSegEvaluator(19)
    with pytest.raises(ValueError, match="shape"):
        ev.process(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        ev.process(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 19]]))
    ev.process(torch.tensor([[0, 9]]), torch.tensor([[0, 9]]))
    table = format_table(ev.evaluate())
    assert "terrain*" in table and "road " in table and "mIoU 100.00" in table and "mIoU_tail 100.00" in table


class _PixelModel(torch.nn.Module):
    """A 1x1-conv 'segmentor' at stride 2 (position dependent via a ramp), enough to check averaging."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 3, 1)

    def forward(self, x):
        ramp = torch.linspace(-1, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], x.shape[-1])
        return {"logits": self.conv(torch.cat([x, ramp], 1))[..., ::2, ::2]}


def test_predict_probs_flip_and_scales_average_softmaxes():
    import torch.nn.functional as F

    from spcl.modeling import predict_probs

    model = _PixelModel().eval()
    x = torch.randn(2, 3, 8, 12)
    out = (6, 10)

    def soft(inp, flipped=False):
        xi = torch.flip(inp, dims=[3]) if flipped else inp
        logits = model(xi)["logits"]
        if flipped:
            logits = torch.flip(logits, dims=[3])
        return F.softmax(F.interpolate(logits, size=out, mode="bilinear", align_corners=False), dim=1)

    single = predict_probs(model, x, out)
    torch.testing.assert_close(single, soft(x))
    torch.testing.assert_close(single.sum(1), torch.ones(2, *out))
    flipped = predict_probs(model, x, out, flip=True)
    torch.testing.assert_close(flipped, (soft(x) + soft(x, True)) / 2)
    assert not torch.allclose(flipped, single)
    half = F.interpolate(x, size=(4, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(predict_probs(model, x, out, scales=(0.5, 1.0)), (soft(half) + soft(x)) / 2)
    for bad in ((1.0, 0.0), (-1.0,), ()):  # --scales 0 once ended in a traceback from F.interpolate
        with pytest.raises(ValueError, match="scales must be positive"):
            predict_probs(model, x, out, scales=bad)


def test_batched_evaluation_with_labels_of_mixed_sizes_equals_one_image_at_a_time(toy_root, tmp_path):
    """TEST.BATCH_SIZE 3 over labels of two sizes: the loader keeps the labels as a list and every
    image is scored at its own label size, exactly as with batch size 1."""
    import torch.nn.functional as F
    from PIL import Image

    from conftest import tiny_cfg
    from spcl.data import build_dataset, build_test_loader
    from spcl.evaluation import run_inference

    import shutil
    root = tmp_path / "data"
    shutil.copytree(toy_root, root)
    label = sorted((root / "cityscapes" / "gtFine" / "val").rglob("*_labelIds.png"))[0]
    image = sorted((root / "cityscapes" / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[0]
    for path, resample in ((label, Image.NEAREST), (image, Image.BILINEAR)):  # one 128×64 frame, others 64×32
        Image.open(path).resize((128, 64), resample).save(path)

    class Model(torch.nn.Module):
        def forward(self, x):
            logits = torch.stack([x[:, 0], x[:, 1], -x[:, 2]] + [x[:, 0] * 0] * 16, 1)
            return {"logits": F.avg_pool2d(logits, 8)}

    cfg = tiny_cfg(str(root), str(tmp_path / "out"))
    dataset = build_dataset(cfg, "cityscapes_val", train=False)
    batch = next(iter(build_test_loader(cfg, dataset, batch_size=3)))
    assert isinstance(batch["label"], list) and batch["label"][0].shape != batch["label"][1].shape
    one = run_inference(Model(), build_test_loader(cfg, dataset, batch_size=1), 19, torch.device("cpu"))
    three = run_inference(Model(), build_test_loader(cfg, dataset, batch_size=3), 19, torch.device("cpu"))
    assert one["num_pixels"] == three["num_pixels"] == 64 * 128 + 3 * 64 * 32 - _ignored(dataset)
    np.testing.assert_allclose(np.nan_to_num(one["IoU"], nan=-1), np.nan_to_num(three["IoU"], nan=-1))


def _ignored(dataset):
    return sum(int((dataset[i]["label"] == 255).sum()) for i in range(len(dataset)))
