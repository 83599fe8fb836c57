"""Benchmark: evaluation throughput (confusion matrix / IoU accumulation), test protocol of docs/method.md "Evaluation".

Predictions and labels at Cityscapes label resolution (1024×2048, 19 classes, ~10% ignored pixels)
are fed to
  * this project: `SemSegEvaluator.process` (one `torch.bincount` confusion matrix per batch);
  * the released code's `intersectionAndUnionGPU` (`benchmarks/reference.py`: three `torch.histc`
    of intersection, prediction and target);
  * the classic `fast_hist` of AdaptSegNet-style evaluation scripts (numpy `bincount`).
Reported: megapixels/s (median over repetitions, one process per variant) and the largest IoU
difference to the reference.

    python benchmarks/evaluation.py [--quick] [--reps N] [--threads T]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import format_table, median, run_worker, timed  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

FULL = {"images": 10, "H": 1024, "W": 2048, "K": 19}
QUICK = {"images": 2, "H": 128, "W": 256, "K": 19}
VARIANTS = ("reference_histc", "fast_hist_numpy", "ours")


def make_data(size: dict, seed: int = 0):
    """(pred, label) pairs, 1×H×W int64: labels in 16×16 blocks, predictions 70% right."""
    g = torch.Generator().manual_seed(seed)
    K, H, W = size["K"], size["H"], size["W"]
    out = []
    for _ in range(size["images"]):
        coarse = torch.randint(0, K, (1, H // 16, W // 16), generator=g)
        coarse[torch.rand(coarse.shape, generator=g) < 0.1] = 255
        label = coarse.repeat_interleave(16, 1).repeat_interleave(16, 2)
        pred = torch.where(torch.rand(label.shape, generator=g) < 0.7, label.clamp(max=K - 1),
                           torch.randint(0, K, label.shape, generator=g))
        out.append((pred, label))
    return out


def fast_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """AdaptSegNet's `fast_hist(label, pred, n)`."""
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def run_variant(variant: str, data, K: int) -> np.ndarray:
    """Accumulate over `data`; IoU per class in percent."""
    if variant == "ours":
        from spcl.evaluation import SemSegEvaluator
        ev = SemSegEvaluator(K, class_names=[str(i) for i in range(K)])
        for pred, label in data:
            ev.process(pred, label)
        return np.array(ev.evaluate()["IoU"])
    if variant == "reference_histc":
        from benchmarks.reference import reference_intersection_union
        inter = union = 0
        for pred, label in data:
            i, u, _ = reference_intersection_union(pred, label, K)
            inter, union = inter + i, union + u
        return (inter / union * 100).double().numpy()
    hist = np.zeros((K, K), dtype=np.int64)
    for pred, label in data:
        hist += fast_hist(label.numpy().reshape(-1), pred.numpy().reshape(-1), K)
    return np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist)) * 100


def task_run(task: dict) -> dict:
    size = task["size"]
    data = make_data(size)
    iou = []
    times = timed(lambda: iou.append(run_variant(task["variant"], data, size["K"])), task["reps"], warmup=1)
    pixels = size["images"] * size["H"] * size["W"]
    return {"times_s": times, "megapixels_per_s": pixels / median(times) / 1e6, "IoU": iou[-1].tolist()}


HANDLERS = {"run": task_run}


def main():
    args = common.base_parser(__doc__.splitlines()[0]).parse_args()
    size = QUICK if args.quick else FULL
    reps = args.reps or (2 if args.quick else 5)
    script, thr = os.path.abspath(__file__), args.threads
    res = {"machine": common.machine_info(thr), "size": size, "reps": reps, "variants": {}}
    for v in VARIANTS:
        res["variants"][v] = run_worker(script, {"kind": "run", "variant": v, "size": size, "reps": reps}, thr)
    ref = res["variants"]["reference_histc"]
    for v, r in res["variants"].items():
        r["speedup"] = r["megapixels_per_s"] / ref["megapixels_per_s"]
        r["max_iou_diff"] = float(np.nanmax(np.abs(np.array(r["IoU"]) - np.array(ref["IoU"]))))
    rows = [[v, r["megapixels_per_s"], r["speedup"], r["max_iou_diff"]] for v, r in res["variants"].items()]
    print(f"evaluation: {size['images']} label maps {size['H']}×{size['W']}, K={size['K']}, {thr} thread(s), "
          f"median of {reps}")
    print(format_table(["variant", "Mpixel/s", "× reference", "max |IoU diff| (pts)"], rows))
    print("written", common.write_results("evaluation", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
