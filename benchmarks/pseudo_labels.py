"""Benchmark: pseudo-label generation end to end (docs/method.md "Pseudo labels") on generated images with a small model.

A ResNet-18 DeepLab-v2 (random init, 19 classes) over N generated target images:
  * this project: `spcl.pseudo.generate_pseudo_labels` (one model pass; quantised confidences
    cached on disk while the histograms accumulate, labels written from the cache), and the same
    with `cache=False` (two passes, bounded memory);
  * the released flow (`benchmarks/reference.py: reference_pseudo_labels`): pass 1 collects every
    confidence with `np.append` and sorts per class, pass 2 runs the model again and writes labels.
Each variant runs in a fresh process. Reported: model passes over the set (images forwarded / N),
images/s end to end (PNG writing included), peak memory above the start, and how many label pixels
agree with the reference.

    python benchmarks/pseudo_labels.py [--quick] [--images N] [--threads T]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import PeakMemory, format_table, run_worker  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

FULL = {"images": 16, "H": 256, "W": 512, "batch": 2, "backbone": "resnet18", "K": 19}
QUICK = {"images": 4, "H": 64, "W": 128, "batch": 2, "backbone": "resnet18", "K": 19}
VARIANTS = ("reference", "ours", "ours_no_cache")


class GeneratedImages(torch.utils.data.Dataset):
    """Smooth random images (normalised-input range), no labels, Cityscapes-like names."""

    def __init__(self, n: int, H: int, W: int, seed: int = 0):
        self.n, self.H, self.W, self.seed = n, H, W, seed
        self._name_index = {}  # generate.py looks ground truth up by name: there is none

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        img = F.interpolate(torch.randn(1, 3, self.H // 8, self.W // 8, generator=g), size=(self.H, self.W),
                            mode="bilinear", align_corners=False)[0]
        return {"image": img, "label": torch.full((self.H, self.W), 255, dtype=torch.int64),
                "name": f"frame_{i:05d}_leftImg8bit.png"}


def build_model(size: dict):
    from spcl.config import get_cfg
    from spcl.modeling import build_segmentor
    cfg = get_cfg()
    cfg.MODEL.BACKBONE, cfg.MODEL.NUM_CLASSES, cfg.MODEL.WEIGHTS = size["backbone"], size["K"], ""
    torch.manual_seed(0)
    model = build_segmentor(cfg).eval()
    counter = {"images": 0}
    model.register_forward_pre_hook(lambda m, args: counter.__setitem__("images", counter["images"] + args[0].shape[0]))
    return model, counter


def task_run(task: dict) -> dict:
    size, variant, out_dir = task["size"], task["variant"], task["out_dir"]
    model, counter = build_model(size)
    loader = torch.utils.data.DataLoader(GeneratedImages(size["images"], size["H"], size["W"]),
                                         batch_size=size["batch"], num_workers=0)
    device = torch.device("cpu")
    with PeakMemory() as m:
        t = time.perf_counter()
        if variant == "reference":
            from benchmarks.reference import reference_pseudo_labels
            thresholds = reference_pseudo_labels(model, loader, out_dir, size["K"], device)
        else:
            from spcl.pseudo import generate_pseudo_labels
            summary = generate_pseudo_labels(model, loader, out_dir, size["K"], device,
                                             cache=(variant == "ours"))
            thresholds = summary["thresholds"]
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "images_per_s": size["images"] / seconds, "passes": counter["images"] / size["images"],
            "peak_mb": m.peak_mb, "thresholds": [float(v) for v in thresholds]}


HANDLERS = {"run": task_run}


def read_labels(folder: str, n: int) -> np.ndarray:
    from PIL import Image
    return np.stack([np.array(Image.open(os.path.join(folder, f"frame_{i:05d}_leftImg8bit.png"))) for i in range(n)])


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None)
    args = p.parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.images:
        size["images"] = args.images
    script, thr = os.path.abspath(__file__), args.threads
    res = {"machine": common.machine_info(thr), "size": size, "variants": {}}
    tmp = tempfile.mkdtemp(prefix="spcl_bench_pseudo_")
    try:
        for v in VARIANTS:
            out = run_worker(script, {"kind": "run", "variant": v, "size": size, "out_dir": os.path.join(tmp, v)}, thr)
            res["variants"][v] = out
        ref_labels = read_labels(os.path.join(tmp, "reference"), size["images"])
        for v in VARIANTS[1:]:
            labels = read_labels(os.path.join(tmp, v), size["images"])
            res["variants"][v]["label_agreement"] = float((labels == ref_labels).mean())
            res["variants"][v]["max_threshold_diff"] = max(
                abs(a - b) for a, b in zip(res["variants"][v]["thresholds"], res["variants"]["reference"]["thresholds"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = res["variants"]["reference"]
    for v, r in res["variants"].items():
        r["speedup"] = r["images_per_s"] / ref["images_per_s"]
    res["targets"] = {"one_model_pass": res["variants"]["ours"]["passes"] == 1.0}
    rows = [[v, r["passes"], r["images_per_s"], r["speedup"], r["peak_mb"], f"{r.get('label_agreement', 1.0):.6f}"]
            for v, r in res["variants"].items()]
    print(f"pseudo labels end to end: {size['images']} generated images {size['H']}×{size['W']}, "
          f"{size['backbone']} DeepLab-v2, batch {size['batch']}, {thr} thread(s)")
    print(format_table(["variant", "model passes", "images/s", "× reference", "peak MB", "label agreement"], rows))
    print("targets:", res["targets"])
    print("written", common.write_results("pseudo_labels", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
