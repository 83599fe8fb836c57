"""Benchmark: one optimiser step of the warm-up stage (the segmentor's optimiser and D's Adam, as
`StageTrainer.step` takes it), torch's default kernel against the fused one (`SOLVER.FUSED_OPTIMIZER`).

Two models, built by the project's `AdvWarmupTrainer` from their configs (no dataset, no weights file):
  * `toy`: configs/toy.yaml, ResNet-18 DeepLab-v2 (AdamW) + D (Adam);
  * `paper`: configs/gta5_r101.yaml, ResNet-101 DeepLab-v2 (SGD, momentum, weight decay) + D (Adam).
Gradients are random (fixed seed), so the time is the step alone. Each (model, kernel) runs in a fresh
process: the median seconds of a step over repetitions after one untimed step. A third process per model
takes 10 steps with both kernels from the same weights and gradients on the poly schedule, and reports
the largest difference of any weight, against the largest total change of a weight: what "the same
update up to float rounding" amounts to.

    python benchmarks/optimizer_step.py [--quick] [--reps N] [--threads T] [--models toy,paper]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import format_table, median, run_worker, timed  # noqa: E402

import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"toy": "configs/toy.yaml", "paper": "configs/gta5_r101.yaml"}
AGREE_STEPS = 10


def build(model: str, fused: bool):
    """The warm-up trainer of `model` with the kernel asked for, built without an output folder."""
    from spcl.config import load_config
    from spcl.engine.stages import AdvWarmupTrainer

    cfg = load_config(os.path.join(REPO, MODELS[model]),
                      ["MODEL.WEIGHTS", "", "SOLVER.FUSED_OPTIMIZER", str(fused), "DATASETS.TOY.GENERATE", "False"])
    return AdvWarmupTrainer(cfg, None, torch.device("cpu"))


def set_grads(trainer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for module in trainer.modules.values():
        for p in module.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 1e-2


def task_time(task: dict) -> dict:
    trainer = build(task["model"], task["fused"])
    set_grads(trainer, 0)
    times = timed(trainer.step, task["reps"], warmup=1)
    params = {name: sum(p.numel() for g in opt.param_groups for p in g["params"])
              for name, opt in trainer.optimizers.items()}
    return {"times_s": times, "median_s": median(times), "params": params}


def task_agree(task: dict) -> dict:
    trainers = [build(task["model"], fused) for fused in (False, True)]
    start = {f"{m}.{k}": v.detach().clone() for m, module in trainers[0].modules.items()
             for k, v in module.named_parameters()}
    for it in range(AGREE_STEPS):
        for t in trainers:
            t.set_learning_rates(it)
            set_grads(t, it)
            t.step()
    plain, fused = ({f"{m}.{k}": v.detach() for m, module in t.modules.items() for k, v in module.named_parameters()}
                    for t in trainers)
    change = max(float((plain[k] - v).abs().max()) for k, v in start.items())
    return {"max_abs_diff": max(float((plain[k] - fused[k]).abs().max()) for k in plain),
            "max_abs_change": change, "steps": AGREE_STEPS}


HANDLERS = {"time": task_time, "agree": task_agree}


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="toy,paper", help="comma-separated: toy, paper")
    args = p.parse_args()
    models = ["toy"] if args.quick else [m for m in args.models.split(",") if m]
    reps = args.reps or (3 if args.quick else 15)
    script, thr = os.path.abspath(__file__), args.threads
    res = {"machine": common.machine_info(thr), "reps": reps, "models": {}}
    rows = []
    for m in models:
        r = {kernel: run_worker(script, {"kind": "time", "model": m, "fused": kernel == "fused", "reps": reps}, thr)
             for kernel in ("default", "fused")}
        r["speedup"] = r["default"]["median_s"] / r["fused"]["median_s"]
        r["agree"] = run_worker(script, {"kind": "agree", "model": m}, thr)
        res["models"][m] = r
        params = " + ".join(f"{n} {v / 1e6:.1f}M" for n, v in r["default"]["params"].items())
        rows.append([m, params, r["default"]["median_s"] * 1e3, r["fused"]["median_s"] * 1e3, r["speedup"],
                     r["agree"]["max_abs_diff"], r["agree"]["max_abs_change"]])
    print(f"optimiser step of the warm-up stage (segmentor + D), {thr} thread(s), median of {reps}")
    print(format_table(["model", "parameters", "default ms", "fused ms", "× faster",
                        f"max |weight diff| after {AGREE_STEPS} steps", "max |weight change|"], rows))
    print("written", common.write_results("optimizer_step", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
