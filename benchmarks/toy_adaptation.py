"""Does adaptation help on the shipped toy shift? Target-val mIoU of source-only, adversarial warm-up,
SPCL align and align + self-training over several seeds, with the target-trained "oracle" ceiling and
the source-domain mIoU of the source-only model as references.

    python benchmarks/toy_adaptation.py [--seeds 0 1 2] [--ablations] [--quick]

Every method runs through the ordinary pipeline code (spcl.engine) with configs/toy.yaml; the toy
dataset is fixed (DATASETS.TOY.SEED), the training seed varies. For a fair comparison the source-only
and oracle models train for as many iterations as warm-up + align together. `--ablations` adds align
variants that answer "is the contrastive term doing anything?": λ = 0 (align without contrastive
terms: only more source training), and τ = 0.1 instead of the released τ = 100.
Writes benchmarks/results/toy_adaptation.json and .md (the table in the README).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from make_toy import prepare_toy_data as prepare_data  # noqa: E402
from spcl.config import load_config  # noqa: E402
from spcl.data.labels import CLASSES_19  # noqa: E402
from spcl.engine import run_pipeline, run_stage  # noqa: E402
from spcl.evaluation import evaluate_checkpoint  # noqa: E402
from spcl.utils.logger import setup_logger  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "toy.yaml")


def cfg_for(out: str, seed: int, extra=()):
    return load_config(CONFIG, ["OUTPUT_DIR", out, "SEED", str(seed), *extra])


# The benchmark's schedule: longer than the quick start of configs/toy.yaml (300 / 150 / 200).
SCHEDULE = ["ADV_WARMUP.STOP_ITER", "400", "ADV_WARMUP.MAX_ITER", "400", "ALIGN.STOP_ITER", "200",
            "ALIGN.MAX_ITER", "200", "SELF_TRAIN.STOP_ITER", "300", "SELF_TRAIN.MAX_ITER", "300"]


def quick_opts(quick: bool) -> list[str]:
    if not quick:
        return list(SCHEDULE)
    return ["DATASETS.TOY.NUM_SOURCE", "24", "DATASETS.TOY.NUM_TARGET_TRAIN", "24", "DATASETS.TOY.NUM_TARGET_VAL",
            "12", "DATASETS.DATA_DIR", os.path.join(ROOT, "output", "toy_bench_quick_data"),
            "ADV_WARMUP.STOP_ITER", "6", "ADV_WARMUP.MAX_ITER", "6", "ALIGN.STOP_ITER", "4", "ALIGN.MAX_ITER", "4",
            "SELF_TRAIN.STOP_ITER", "4", "SELF_TRAIN.MAX_ITER", "4", "SOLVER.LOG_PERIOD", "2"]


def run_seed(seed: int, out_root: str, base: list[str], ablations: bool) -> dict:
    """All methods for one training seed → {method: metrics dict}, cached in seed<N>/results.json
    (so seeds can run in separate processes and a rerun only collects)."""
    out = os.path.join(out_root, f"seed{seed}")
    cache = os.path.join(out, "results.json")
    if os.path.isfile(cache):
        cached = json.load(open(cache))
        if not ablations or any(k.startswith("align, ") for k in cached):
            return cached
    res = _run_seed(seed, out, out_root, base, ablations)
    with open(cache, "w") as f:
        json.dump(res, f)
    return res


def _run_seed(seed: int, out: str, out_root: str, base: list[str], ablations: bool) -> dict:
    res = {}
    cfg = cfg_for(os.path.join(out, "spcl"), seed, base)
    prepare_data(cfg)
    run_pipeline(cfg)
    by_stage = {row["stage"]: json.load(open(os.path.join(out, "spcl", row["folder"], "manifest.json")))["metrics"]
                for row in json.load(open(os.path.join(out, "spcl", "summary.json")))["stages"]}
    res["adv_warmup"] = by_stage["adv_warmup"]
    res["align (SPCL)"] = by_stage["align"]
    res["align + self_train"] = by_stage["self_train"]
    total = cfg.ADV_WARMUP.STOP_ITER + cfg.ALIGN.STOP_ITER
    so_opts = base + ["SOURCE_ONLY.STOP_ITER", str(total), "SOURCE_ONLY.MAX_ITER", str(total)]
    so_dir = os.path.join(out, "source_only")
    so = run_stage(cfg_for(so_dir, seed, so_opts), "source_only", so_dir)
    res["source_only"] = so["metrics"]
    # the source-only model on a held-out source set (another toy seed): the source-domain reference
    held = os.path.join(out_root, "heldout_source")
    hcfg = cfg_for(os.path.join(out, "source_eval"), seed, base + [
        "DATASETS.DATA_DIR", held, "DATASETS.TOY.SEED", "1000", "DATASETS.TOY.NUM_TARGET_TRAIN", "1",
        "DATASETS.TOY.NUM_TARGET_VAL", "1", "DATASETS.TEST", "gta5_train", "MODEL.WEIGHTS",
        so["outputs"]["checkpoint"]])
    prepare_data(hcfg)
    res["source_only on source (held-out)"] = _evaluate(hcfg)
    oracle_dir = os.path.join(out, "oracle")
    oracle = run_stage(cfg_for(oracle_dir, seed, so_opts + ["DATASETS.SOURCE", "cityscapes_train",
                                                             "INPUT.SOURCE_JITTER", "False"]),
                       "source_only", oracle_dir)
    res["oracle (target labels)"] = oracle["metrics"]
    if ablations:
        handed = json.load(open(os.path.join(out, "spcl", "3_align", "manifest.json")))["inputs"]
        run = os.path.join(out, "spcl")  # manifests hold paths relative to the run folder
        inputs = ["MODEL.WEIGHTS", os.path.join(run, handed["checkpoint"]), "PROTOTYPE.PATH",
                  os.path.join(run, handed["prototypes"]), "DATASETS.PSEUDO_DIR", os.path.join(run, handed["pseudo_dir"])]
        for name, opts in (("align, λ = 0 (no contrastive)", ["LOSS.CONTRAST.WEIGHT", "0.0"]),
                           ("align, τ = 0.1", ["LOSS.CONTRAST.TEMPERATURE", "0.1"])):
            d = os.path.join(out, name.split(",")[1].strip().split(" ")[0].replace("λ", "lambda").replace("τ", "tau"))
            res[name] = run_stage(cfg_for(d, seed, base + inputs + opts), "align", d)["metrics"]
    return res


def _evaluate(cfg) -> dict:
    m = evaluate_checkpoint(cfg, cfg.MODEL.WEIGHTS)
    return {k: m[k] for k in ("mIoU", "mAcc", "aAcc", "IoU")}


def mean_std(values):
    vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    s = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, s


ORDER = ["source_only", "adv_warmup", "align (SPCL)", "align + self_train", "align, λ = 0 (no contrastive)",
         "align, τ = 0.1", "oracle (target labels)", "source_only on source (held-out)"]


def table(results: dict) -> tuple[str, dict]:
    """Markdown tables (summary and per class) and the aggregated numbers."""
    methods = [m for m in ORDER if any(m in r for r in results.values())]
    agg = {}
    for m in methods:
        runs = [results[s][m] for s in results if m in results[s]]
        agg[m] = {"mIoU": mean_std([r["mIoU"] for r in runs]),
                  "IoU": [mean_std([r["IoU"][k] for r in runs])[0] for k in range(19)]}
    seeds = list(results)
    lines = [f"| method | target val mIoU (mean ± std over seeds {', '.join(map(str, seeds))}) | per seed |",
             "|---|---|---|"]
    for m in methods:
        mu, sd = agg[m]["mIoU"]
        per = ", ".join(f"{results[s][m]['mIoU']:.1f}" if m in results[s] else "–" for s in seeds)
        lines.append(f"| {m} | {mu:.1f} ± {sd:.1f} | {per} |")
    present = [k for k in range(19) if any(not math.isnan(agg[m]["IoU"][k]) for m in methods)]
    lines += ["", "| method | " + " | ".join(CLASSES_19[k] for k in present) + " |",
              "|---|" + "---|" * len(present)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{agg[m]['IoU'][k]:.0f}" for k in present) + " |")
    return "\n".join(lines), agg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablations", action="store_true", help="also align with λ = 0 and with τ = 0.1")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (a handful of iterations)")
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "toy_bench"))
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    setup_logger()
    base = quick_opts(args.quick)
    out_root = args.output + ("_quick" if args.quick else "")
    t0 = time.time()
    results = {s: run_seed(s, out_root, base, args.ablations) for s in args.seeds}
    md, agg = table(results)
    minutes = (time.time() - t0) / 60
    print(md)
    print(f"\n{len(args.seeds)} seeds in {minutes:.1f} min")
    if not args.quick:
        os.makedirs(args.results, exist_ok=True)
        with open(os.path.join(args.results, "toy_adaptation.json"), "w") as f:
            json.dump({"seeds": args.seeds, "minutes": minutes, "results": results, "aggregate": agg,
                       "command": " ".join(sys.argv)}, f, indent=1, default=str)
        with open(os.path.join(args.results, "toy_adaptation.md"), "w") as f:
            f.write(md + f"\n\n`python {' '.join(sys.argv)}`, {minutes:.1f} min on this machine.\n")


if __name__ == "__main__":
    main()
