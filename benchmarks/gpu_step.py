"""Benchmark for a GPU machine: one align-stage step at the paper's sizes, fp32 against mixed
precision and channels-last, in one script.

ResNet-101 DeepLab-v2, batch 4 source (1280×720, GTA5) + 4 target (1024×512, Cityscapes) images,
the project's own `AlignTrainer.run_step` with `SOLVER.AMP` ∈ {"", bf16, fp16 (+ gradient scaler)}
and `MODEL.CHANNELS_LAST` ∈ {False, True}. Per variant: images/s (median over timed steps after
warm-up, CUDA-synchronised), peak GPU memory (`torch.cuda.max_memory_allocated`), and the losses
of the last step; then a loss curve of `--curve-iters` steps, fp32 against each AMP variant, from
the same weights, prototypes and batches. Random weights and tensors: no dataset needed.

    python benchmarks/gpu_step.py                       # all variants, paper sizes (~10 min on an H100)
    python benchmarks/gpu_step.py --variants fp32,bf16_cl --steps 10
    python benchmarks/gpu_step.py --device cpu --quick  # smoke test of the script itself
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import format_table, median  # noqa: E402
from benchmarks.train_step import VARIANTS, build_trainer, compare_curves, make_batch  # noqa: E402

import torch  # noqa: E402

PAPER = {"backbone": "resnet101", "source_hw": (720, 1280), "target_hw": (512, 1024), "source_batch": 4,
         "target_batch": 4}
QUICK = {"backbone": "resnet18", "source_hw": (48, 80), "target_hw": (32, 64), "source_batch": 2, "target_batch": 2}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(model: dict, variant: str, device: torch.device, warmup: int, steps: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="spcl_gpu_step_")
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        trainer = build_trainer(model, variant, tmp, device=str(device))
        batch = {k: trainer._to_device(v) for k, v in make_batch(model, 0).items()}
        for _ in range(warmup):
            trainer.run_step(batch)
        sync(device)
        # the warm-up's peak counts whatever the first steps allocate once (an H200 reported 141 GB for
        # fp32 against 20.6 GB for bf16, presumably cuDNN autotuning: cudnn.benchmark tries algorithms
        # with large workspaces); the timed steps' peak is what training needs
        peak_first = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            logs = trainer.run_step(batch)
            sync(device)
            times.append(time.perf_counter() - t)
        n = model["source_batch"] + model["target_batch"]
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        return {"images_per_s": n / median(times), "times_s": times, "peak_mb": peak, "peak_mb_warmup": peak_first,
                "loss": {k: float(v) for k, v in logs.items()}}
    except torch.cuda.OutOfMemoryError as e:  # pragma: no cover - depends on the card
        return {"images_per_s": float("nan"), "times_s": [], "peak_mb": float("nan"), "error": f"OOM: {e}"[:300]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def loss_curve(model: dict, variant: str, device: torch.device, iters: int, base_lr: float) -> list:
    tmp = tempfile.mkdtemp(prefix="spcl_gpu_curve_")
    try:
        trainer = build_trainer(model, variant, tmp, device=str(device), base_lr=base_lr)
        batches = [make_batch(model, 100 + i) for i in range(4)]
        out = []
        for it in range(iters):
            logs = trainer.run_step({k: trainer._to_device(v) for k, v in batches[it % 4].items()})
            out.append({k: float(v) for k, v in logs.items()})
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, e.g. with --device cpu)")
    p.add_argument("--variants", default="fp32,fp32_cl,bf16,bf16_cl,fp16,fp16_cl")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--curve-iters", type=int, default=20)
    p.add_argument("--curve-variants", default="bf16_cl,fp16_cl")
    p.add_argument("--curve-lr", type=float, default=2.5e-6,
                   help="ALIGN.BASE_LR of the loss curves: a random ResNet-101 with frozen BN diverges at "
                        "the paper's 2.5e-4 (and at 2.5e-5) within a few steps, in any precision")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or use --device cpu --quick for a smoke test")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = QUICK if args.quick else PAPER
    warmup, steps = (1, 2) if args.quick else (args.warmup, args.steps)
    iters = 4 if args.quick else args.curve_iters
    variants = args.variants.split(",")
    all_variants = dict(VARIANTS, fp16=("fp16", False))
    unknown = set(variants) - set(all_variants)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {sorted(all_variants)}")
    VARIANTS.update(all_variants)
    res = {"machine": common.machine_info(torch.get_num_threads()), "model": model, "warmup": warmup,
           "steps": steps, "variants": {}}
    for v in variants:
        print(f"[gpu_step] {v} ...", flush=True)
        res["variants"][v] = run_variant(model, v, device, warmup, steps)
    base = res["variants"].get("fp32", {}).get("images_per_s", float("nan"))
    for o in res["variants"].values():
        o["speedup_vs_fp32"] = o["images_per_s"] / base
    curves = {"fp32": loss_curve(model, "fp32", device, iters, args.curve_lr)}
    for v in args.curve_variants.split(","):
        if v:
            curves[v] = loss_curve(model, v, device, iters, args.curve_lr)
    res["loss_curve"] = {"iters": iters, "base_lr": args.curve_lr, "curves": curves,
                         "comparison": {v: compare_curves(curves["fp32"], c) for v, c in curves.items() if v != "fp32"}}
    print(f"align step on {res['machine']['cuda'] or device}: {model['backbone']}, "
          f"{model['source_batch']}×{model['source_hw']} + {model['target_batch']}×{model['target_hw']}, "
          f"median of {steps} steps after {warmup} warm-up")
    print(format_table(["variant", "images/s", "× fp32", "peak GPU MB", "peak MB in warm-up"],
                       [[v, o["images_per_s"], o["speedup_vs_fp32"], o["peak_mb"], o.get("peak_mb_warmup", float("nan"))]
                        for v, o in res["variants"].items()]))
    rows = [[v, k, d["max_abs_diff"], d["fp32_noise"], d["final_fp32"], d["final_other"]]
            for v, comp in res["loss_curve"]["comparison"].items() for k, d in comp.items()]
    print(f"loss curve, {iters} iterations, against fp32:")
    print(format_table(["variant", "loss", "max |diff|", "fp32 noise", "final fp32", "final variant"], rows))
    quick = args.quick or device.type != "cuda"
    print("written", common.write_results("gpu_step", res, quick))


if __name__ == "__main__":
    main()
