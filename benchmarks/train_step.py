"""Benchmark: one align-stage training step (docs/method.md "Align"), fp32 against mixed precision and
channels-last, for a small backbone and for ResNet-101 at a reduced size.

The step is the project's own `AlignTrainer.run_step` (source forward, CE / 1.8, EMA prototype
update, L_cl^s, backward; target forward, L_cl^t on offline pseudo labels, backward; SGD step),
built from the config with `SOLVER.AMP` and `MODEL.CHANNELS_LAST` set per variant, on random
tensors (no dataset). Every (model, variant) runs in a fresh process: images/s (source + target
images per second, median over repetitions after one warm-up step; a variant whose first step
alone exceeds --budget seconds is reported from that step) and peak memory above the state before
the first step. Then a 20-iteration loss curve, fp32 against each mixed-precision
variant, from the same initial weights, prototypes and batches (the small backbone at a small size).

    python benchmarks/train_step.py [--quick] [--reps N] [--threads T] [--models small,r101]
        [--variants fp32,fp32_cl,bf16_cl] [--curve-iters 20] [--budget S]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import PeakMemory, format_table, median, run_worker  # noqa: E402

import torch  # noqa: E402

# batch = source + target images per step. ResNet-101 at 128×256: on a CPU without bf16 hardware a
# bf16 step at 256×512 takes ~8 minutes (fp32: ~40 s), so the comparison runs at a quarter of it.
MODELS = {
    "small": {"backbone": "resnet18", "H": 256, "W": 512, "source_batch": 1, "target_batch": 1},
    "r101": {"backbone": "resnet101", "H": 128, "W": 256, "source_batch": 1, "target_batch": 1},
}
QUICK_MODELS = {
    "small": {"backbone": "resnet18", "H": 64, "W": 128, "source_batch": 1, "target_batch": 1},
    "r101": {"backbone": "resnet101", "H": 32, "W": 64, "source_batch": 1, "target_batch": 1},
}
VARIANTS = {"fp32": ("", False), "fp32_cl": ("", True), "bf16": ("bf16", False), "bf16_cl": ("bf16", True),
            "fp16_cl": ("fp16", True)}
CURVE = {"backbone": "resnet18", "H": 32, "W": 64, "source_batch": 2, "target_batch": 2, "batches": 4}
K = 19


def build_trainer(model: dict, variant: str, out_dir: str, seed: int = 0, device: str = "cpu",
                  base_lr: float | None = None):
    """An AlignTrainer on `device` for `model` with the variant's SOLVER.AMP / MODEL.CHANNELS_LAST, built
    without an output folder (only `run_step` is called); `out_dir` holds the prototype file.
    `base_lr` replaces ALIGN.BASE_LR (the paper's 2.5e-4 is for pretrained weights: from random
    weights with frozen BN a ResNet-101's seg loss goes 4.6 → 26 in 8 steps even at 2.5e-5)."""
    from spcl.config import load_config
    from spcl.engine.stages import AlignTrainer
    from spcl.modeling.backbones import build_backbone

    amp, channels_last = VARIANTS[variant]
    C = build_backbone(model["backbone"]).out_channels
    g = torch.Generator().manual_seed(seed)
    protos_path = os.path.join(out_dir, "protos.pth")
    os.makedirs(out_dir, exist_ok=True)
    torch.save({"prototypes": torch.nn.functional.normalize(torch.randn(K, C, generator=g), dim=1)}, protos_path)
    cfg = load_config("", [
        "OUTPUT_DIR", out_dir, "SEED", str(seed), "MODEL.BACKBONE", model["backbone"], "MODEL.WEIGHTS", "",
        "MODEL.FREEZE_BN", "True", "MODEL.CHANNELS_LAST", str(channels_last), "SOLVER.AMP", amp,
        "PROTOTYPE.PATH", protos_path, "ALIGN.SOURCE_BATCH", str(model["source_batch"]),
        "ALIGN.TARGET_BATCH", str(model["target_batch"]),
        *(["ALIGN.BASE_LR", str(base_lr)] if base_lr is not None else [])])
    trainer = AlignTrainer(cfg, None, torch.device(device))
    images = make_batch(model, 12345)["source"]["image"].to(trainer.device)
    calibrate_frozen_bn(getattr(trainer.model, "module", trainer.model), images)
    return trainer


def calibrate_frozen_bn(module: torch.nn.Module, images: torch.Tensor) -> int:
    """Sets every FrozenBatchNorm2d's running mean / variance to the per-channel statistics of its own
    input on `images` (B×3×H×W), in one forward pass: each layer is calibrated before the next one
    sees its output. The benchmarks train MODEL.FREEZE_BN True (the paper's path) from random weights;
    without this the frozen statistics (mean 0, var 1) match no input, activations grow through the
    101 layers, the first seg loss is ~1e5 and the second step is NaN (seen in fp32 and bf16 on an
    H200). Calibrated, the network starts like a pretrained one whose statistics fit its inputs.
    Returns the number of layers set."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    def set_stats(bn, args):
        x = args[0].detach().float()
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    hooks = [m.register_forward_pre_hook(set_stats) for m in module.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        with torch.no_grad():
            module(images)
    finally:
        for h in hooks:
            h.remove()
    return len(hooks)


def make_batch(model: dict, seed: int) -> dict:
    """Random images; source labels and target pseudo labels in 16×16 blocks (target 40% ignored).
    `model` gives H, W (both domains) or SOURCE_HW / TARGET_HW."""
    g = torch.Generator().manual_seed(seed)

    def domain(b, hw, ignore):
        H, W = hw
        coarse = torch.randint(0, K, (b, -(-H // 16), -(-W // 16)), generator=g)
        coarse[torch.rand(coarse.shape, generator=g) < ignore] = 255
        label = coarse.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, :H, :W].contiguous()
        return {"image": torch.randn(b, 3, H, W, generator=g), "label": label}
    src_hw = model.get("source_hw", (model.get("H"), model.get("W")))
    tgt_hw = model.get("target_hw", (model.get("H"), model.get("W")))
    return {"source": domain(model["source_batch"], src_hw, 0.05),
            "target": domain(model["target_batch"], tgt_hw, 0.4)}


def task_speed(task: dict) -> dict:
    model, variant = task["model"], task["variant"]
    tmp = tempfile.mkdtemp(prefix="spcl_bench_step_")
    try:
        trainer = build_trainer(model, variant, tmp)
        batch = {k: trainer._to_device(v) for k, v in make_batch(model, 0).items()}
        with PeakMemory() as m:  # the first step: allocator, oneDNN primitives, optimiser state
            t = time.perf_counter()
            logs = trainer.run_step(batch)
            first = time.perf_counter() - t
        times = []
        budget = task.get("budget_s", 1e9)
        first_only = first > budget  # a step slower than the budget (bf16 without bf16 hardware):
        if first_only:              # its first step is the one sample (one-time costs are small then)
            times = [first]
        start = time.perf_counter()
        for _ in range(0 if first_only else task["reps"]):
            t = time.perf_counter()
            logs = trainer.run_step(batch)
            times.append(time.perf_counter() - t)
            if time.perf_counter() - start > budget:
                break
        n_img = model["source_batch"] + model["target_batch"]
        return {"first_step_s": first, "times_s": times, "first_step_only": first_only,
                "images_per_s": n_img / median(times),
                "peak_mb": m.peak_mb, "loss": {k: float(v) for k, v in logs.items()}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def task_curve(task: dict) -> dict:
    """Losses of `iters` steps over a fixed cycle of batches, from seed-0 weights and prototypes."""
    tmp = tempfile.mkdtemp(prefix="spcl_bench_curve_")
    try:
        model = task["model"]
        trainer = build_trainer(model, task["variant"], tmp)
        batches = [make_batch(model, 100 + i) for i in range(model["batches"])]
        curve = []
        for it in range(task["iters"]):
            batch = {k: trainer._to_device(v) for k, v in batches[it % len(batches)].items()}
            logs = trainer.run_step(batch)
            curve.append({k: float(v) for k, v in logs.items()})
        return {"curve": curve}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


HANDLERS = {"speed": task_speed, "curve": task_curve}
LOSS_KEYS = ("loss_seg", "loss_cl_src", "loss_cl_tgt")


def compare_curves(ref: list, other: list) -> dict:
    """Largest per-iteration difference of each loss, and the fp32 curve's own iteration-to-iteration
    fluctuation (std of successive differences / √2) as the noise scale it is judged against."""
    out = {}
    for k in LOSS_KEYS:
        a = torch.tensor([c[k] for c in ref], dtype=torch.float64)
        b = torch.tensor([c[k] for c in other], dtype=torch.float64)
        noise = (a[1:] - a[:-1]).std().item() / 2 ** 0.5 if len(a) > 2 else float("nan")
        out[k] = {"max_abs_diff": (a - b).abs().max().item(), "mean_abs_diff": (a - b).abs().mean().item(),
                  "fp32_noise": noise, "final_fp32": a[-1].item(), "final_other": b[-1].item()}
    return out


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="small,r101")
    p.add_argument("--variants", default="fp32,fp32_cl,bf16_cl",
                   help=f"of {','.join(VARIANTS)} (bf16 without channels-last is far slower still here)")
    p.add_argument("--curve-iters", type=int, default=20)
    p.add_argument("--curve-variants", default="bf16_cl")
    p.add_argument("--budget", type=float, default=60.0,
                   help="stop timing a variant after this many seconds (at least one timed step)")
    args = p.parse_args()
    models = QUICK_MODELS if args.quick else MODELS
    reps = args.reps or (2 if args.quick else 3)
    script, thr = os.path.abspath(__file__), args.threads
    variants = args.variants.split(",")
    res = {"machine": common.machine_info(thr), "models": {}, "reps": reps}
    for name in args.models.split(","):
        model = models[name]
        r = {"config": model, "variants": {}}
        for v in variants:
            r["variants"][v] = run_worker(script, {"kind": "speed", "model": model, "variant": v, "reps": reps,
                                                   "budget_s": args.budget}, thr)
        base = r["variants"]["fp32"]["images_per_s"] if "fp32" in r["variants"] else float("nan")
        for v, out in r["variants"].items():
            out["speedup_vs_fp32"] = out["images_per_s"] / base
        res["models"][name] = r
    curve_model = dict(CURVE, **({"H": 16, "W": 32} if args.quick else {}))
    iters = 4 if args.quick else args.curve_iters
    curves = {"fp32": run_worker(script, {"kind": "curve", "model": curve_model, "variant": "fp32", "iters": iters},
                                 thr)["curve"]}
    for v in args.curve_variants.split(","):
        curves[v] = run_worker(script, {"kind": "curve", "model": curve_model, "variant": v, "iters": iters}, thr)["curve"]
    res["loss_curve"] = {"config": curve_model, "iters": iters, "curves": curves,
                         "comparison": {v: compare_curves(curves["fp32"], c) for v, c in curves.items() if v != "fp32"}}
    best_amp = {name: max((o["speedup_vs_fp32"] for v, o in r["variants"].items() if v.startswith(("bf16", "fp16"))),
                          default=float("nan")) for name, r in res["models"].items()}
    res["targets"] = {f"{name}: amp step >= 2x fp32 images/s": s >= 2.0 for name, s in best_amp.items()}
    for v, comp in res["loss_curve"]["comparison"].items():
        res["targets"][f"{v} loss curve within fp32 noise"] = all(
            d["max_abs_diff"] <= d["fp32_noise"] for d in comp.values())
    rows = []
    for name, r in res["models"].items():
        c = r["config"]
        for v, o in r["variants"].items():
            rows.append([f"{name} ({c['backbone']} {c['H']}×{c['W']}, {c['source_batch']}+{c['target_batch']})", v,
                         o["images_per_s"], o["speedup_vs_fp32"], o["peak_mb"],
                         "first step" if o.get("first_step_only") else len(o["times_s"])])
    print(f"align step, {thr} thread(s), median of up to {reps} timed steps after one warm-up; machine: "
          f"{res['machine']['cpu']}, torch CPU capability {res['machine']['torch_cpu_capability']}, "
          f"bf16 hardware: {res['machine']['bf16_hw']}")
    print(format_table(["model", "variant", "images/s", "× fp32", "peak MB", "steps timed"], rows))
    crow = []
    for v, comp in res["loss_curve"]["comparison"].items():
        for k, d in comp.items():
            crow.append([v, k, d["max_abs_diff"], d["mean_abs_diff"], d["fp32_noise"], d["final_fp32"], d["final_other"]])
    print(f"loss curve, {iters} iterations ({curve_model['backbone']} {curve_model['H']}×{curve_model['W']}, "
          f"{curve_model['source_batch']}+{curve_model['target_batch']}), against fp32:")
    print(format_table(["variant", "loss", "max |diff|", "mean |diff|", "fp32 noise", "final fp32", "final variant"], crow))
    print("targets:", res["targets"])
    print("written", common.write_results("train_step", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
