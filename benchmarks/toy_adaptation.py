"""Does adaptation help on the shipped toy shift, and what does each stage and term contribute?

    python benchmarks/toy_adaptation.py [--config configs/toy_256.yaml] [--seeds 0 1 2] [--sweep] [--jobs 2] [--quick]

Per training seed (the toy dataset itself is fixed by DATASETS.TOY.SEED), everything runs through the
ordinary pipeline code with --config (default configs/toy.yaml, the quick start's toy and schedule;
configs/toy_256.yaml is the same at 256x128, the benchmark toy):

* the SPCL pipeline: adv_warmup → prototypes → pseudo_labels → align → pseudo_labels → self_train;
* align with λ = 0 from the same warm-up, prototypes and pseudo labels (more source training plus
  the pseudo-label pipeline, without the contrastive term);
* source-only, trained on as many source images as warm-up + align together (a fair baseline);
* the oracle: the same schedule on the target's labelled train images;
* source-only with its BatchNorm statistics re-estimated on the target train images (AdaBN, no
  weight update): how much of a gain over source-only normalisation alone gives;
* the source-domain reference: the source-only model on held-out source images (another toy seed);
* with --sweep: align at τ ∈ {100, 10, 1, 0.1}, with and without unit-norm prototypes, λ = 1.

Comparisons are paired per seed (same data, same seed): mean ± std over seeds and the per-seed
differences. Seeds run in separate processes (--jobs at a time, one torch thread each); each seed's
results are cached in OUTPUT/seed<N>/results.json, so a rerun only collects. Writes
benchmarks/results/toy_adaptation.{json,md} (the tables in the README).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

CONFIG = os.path.join(ROOT, "configs", "toy.yaml")  # --config replaces it (in the seed processes too)
TAUS = (100.0, 10.0, 1.0, 0.1)
QUICK = ["DATASETS.TOY.NUM_SOURCE", "24", "DATASETS.TOY.NUM_TARGET_TRAIN", "24", "DATASETS.TOY.NUM_TARGET_VAL", "12",
         "ADV_WARMUP.STOP_ITER", "6", "ADV_WARMUP.MAX_ITER", "6", "ALIGN.STOP_ITER", "4", "ALIGN.MAX_ITER", "4",
         "SELF_TRAIN.STOP_ITER", "4", "SELF_TRAIN.MAX_ITER", "4", "SOLVER.LOG_PERIOD", "2"]


def cfg_for(out: str, seed: int, extra=()):
    from spcl.config import load_config

    return load_config(CONFIG, ["OUTPUT_DIR", out, "SEED", str(seed), *extra])


def source_only_iterations(cfg) -> int:
    """Iterations of source-only that see as many source images as warm-up + align together."""
    images = cfg.ADV_WARMUP.STOP_ITER * cfg.ADV_WARMUP.SOURCE_BATCH + cfg.ALIGN.STOP_ITER * cfg.ALIGN.SOURCE_BATCH
    return math.ceil(images / cfg.SOURCE_ONLY.SOURCE_BATCH)


def config_key(cfg) -> str:
    """A digest of the merged config a seed's runs start from (its output folder left out)."""
    text = cfg.dump()
    return hashlib.sha1("\n".join(line for line in text.splitlines()
                                  if not line.startswith("OUTPUT_DIR:")).encode()).hexdigest()[:16]


def load_cache(path: str, key: str) -> dict:
    """The per-seed results cached at `path`, stamped with `key`; a cache of another config stops the
    run (its rows would be mixed into this config's tables) instead of being reused silently."""
    if not os.path.isfile(path):
        return {"_config": key}
    with open(path) as f:
        res = json.load(f)
    if res.get("_config", key) != key:
        raise SystemExit(f"{path} holds results of another config (the config or --opts changed since); "
                         "delete that folder or give another --output")
    res["_config"] = key
    return res


def _metrics(m: dict) -> dict:
    return {k: m[k] for k in ("mIoU", "mIoU_tail", "IoU") if k in m}


def align_inputs(run_dir: str) -> list[str]:
    """Config overrides that give a variant of align the pipeline's align inputs (warm-up checkpoint,
    prototypes, first-round pseudo labels), read from the manifest of `run_dir`'s align stage."""
    handed = json.load(open(os.path.join(run_dir, "3_align", "manifest.json")))["inputs"]
    return ["MODEL.WEIGHTS", os.path.join(run_dir, handed["checkpoint"]),
            "PROTOTYPE.PATH", os.path.join(run_dir, handed["prototypes"]),
            "DATASETS.PSEUDO_DIR", os.path.join(run_dir, handed["pseudo_dir"])]


def align_folder(seed_dir: str, name: str) -> str:
    """The folder of the align variant `name` (e.g. "align λ=0" → <seed_dir>/align_lambda=0)."""
    return os.path.join(seed_dir, name.replace(" ", "_").replace("λ", "lambda").replace("τ", "tau"))


def run_seed(seed: int, out_root: str, base: list[str], sweep: bool) -> dict:
    """All methods for one training seed → {method: metrics}."""
    from make_toy import prepare_toy_data
    from spcl.engine import run_pipeline, run_stage
    from spcl.evaluation import evaluate_checkpoint

    from spcl.utils.io import atomic_write_json

    out = os.path.join(out_root, f"seed{seed}")
    cache = os.path.join(out, "results.json")
    run_dir = os.path.join(out, "spcl")
    cfg = cfg_for(run_dir, seed, base)
    res = load_cache(cache, config_key(cfg))

    def save():
        atomic_write_json(res, cache)  # a kill mid-write leaves the previous cache readable
    prepare_toy_data(cfg)
    if "self_train" not in res:
        summary = run_pipeline(cfg)
        for row in summary["stages"]:
            manifest = json.load(open(os.path.join(run_dir, row["folder"], "manifest.json")))
            name = row["stage"] if row["stage"] != "pseudo_labels" else f"pseudo_labels_{row['folder'][0]}"
            res[name] = manifest["metrics"]
        res["align"].update(_grad_shares(os.path.join(run_dir, "3_align")))
        save()
    inputs = align_inputs(run_dir)

    def run_align(name, opts):
        if name not in res:
            d = align_folder(out, name)
            result = run_stage(cfg_for(d, seed, base + inputs + opts), "align", d)
            res[name] = {**_metrics(result["metrics"]), **_grad_shares(d)}
            save()

    run_align("align λ=0", ["LOSS.CONTRAST.WEIGHT", "0.0"])
    n = source_only_iterations(cfg)
    so_opts = base + ["SOURCE_ONLY.STOP_ITER", str(n), "SOURCE_ONLY.MAX_ITER", str(n)]
    if "source_only" not in res:
        d = os.path.join(out, "source_only")
        res["source_only"] = _metrics(run_stage(cfg_for(d, seed, so_opts), "source_only", d)["metrics"])
        res["source_only"]["iterations"] = n
        save()
    if "source_only_adabn" not in res:  # the same network, its BN statistics re-estimated on target images
        d = os.path.join(out, "source_only")
        ckpt = os.path.join(d, "checkpoints", "model_final.pth")
        res["source_only_adabn"] = _metrics(evaluate_checkpoint(cfg_for(d, seed, so_opts), ckpt,
                                                                bn_stats_from=cfg.DATASETS.TARGET))
        save()
    if "source_domain" not in res:
        hcfg = cfg_for(os.path.join(out, "source_eval"), seed, base + heldout_opts(out_root))
        prepare_toy_data(hcfg)
        ckpt = os.path.join(out, "source_only", "checkpoints", "model_final.pth")
        res["source_domain"] = _metrics(evaluate_checkpoint(hcfg, ckpt))
        save()
    if "oracle" not in res:
        d = os.path.join(out, "oracle")
        ocfg = cfg_for(d, seed, so_opts + ["DATASETS.SOURCE", "cityscapes_train", "INPUT.SOURCE_JITTER", "False"])
        res["oracle"] = _metrics(run_stage(ocfg, "source_only", d)["metrics"])
        save()
    if sweep:  # last: the comparisons above come first when time is short
        for tau in TAUS:
            for unit in (False, True):
                run_align(f"align τ={tau:g}{' unit' if unit else ''}",
                          ["LOSS.CONTRAST.TEMPERATURE", str(tau), "LOSS.CONTRAST.NORMALIZE_PROTOTYPES", str(unit)])
    return res


def run_seed_processes(seeds, command, log_path, jobs: int, poll: float = 2.0) -> None:
    """Run `command(seed)` (an argv list) for every seed in its own process, at most `jobs` at once,
    each with one OpenMP thread and its output appended to `log_path(seed)`. A failed seed stops the
    run with SystemExit naming its log."""
    todo, running = list(seeds), []
    while todo or running:
        while todo and len(running) < max(1, jobs):
            seed = todo.pop(0)
            os.makedirs(os.path.dirname(log_path(seed)) or ".", exist_ok=True)
            with open(log_path(seed), "a") as log:  # the child keeps its own copy of the descriptor
                env = dict(os.environ, OMP_NUM_THREADS="1")
                running.append((seed, subprocess.Popen(command(seed), stdout=log, stderr=subprocess.STDOUT, env=env)))
        for seed, proc in list(running):
            if proc.poll() is not None:
                running.remove((seed, proc))
                if proc.returncode:
                    for _, other in running:
                        other.terminate()
                    raise SystemExit(f"seed {seed} failed: see {log_path(seed)}")
        time.sleep(poll)


def heldout_opts(out_root: str) -> list[str]:
    """Held-out source images (another toy seed) as the test set: the source-domain reference."""
    return ["DATASETS.DATA_DIR", os.path.join(out_root, "heldout_source"), "DATASETS.TOY.SEED", "1000",
            "DATASETS.TOY.NUM_TARGET_TRAIN", "1", "DATASETS.TOY.NUM_TARGET_VAL", "1", "DATASETS.TEST", "gta5_train"]


def _grad_shares(folder: str) -> dict:
    """Mean over the run of the logged gradient ratios ‖∂λL_cl/∂F‖ / ‖∂L_seg/∂F‖ and losses."""
    from spcl.utils.io import number

    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.json"))]
    out = {}
    for key in ("grad_ratio_src", "grad_ratio_tgt", "loss_cl_src", "loss_cl_tgt"):
        values = [number(r[key]) for r in rows if key in r]  # null: a NaN ratio
        if values:
            out[key] = sum(values) / len(values)
            out[key + "_last"] = values[-1]
    return out


# ------------------------------------------------------------------------------------------- tables
def mean_std(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    s = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, s


def t_quantile(df: int, p: float = 0.975) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (2.306 for df 8 at 0.975: a 95 %
    interval is mean ± this × standard error), by Simpson's rule on the density and bisection; no SciPy."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x, n=2000):
        h = x / n
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    lo, hi = 0.0, 1000.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def interval95(values) -> tuple[float, float]:
    """The 95 % t-interval of the mean of `values` (mean ± t(n − 1) × std / √n); NaNs under two values."""
    m, sd = mean_std(values)
    n = len([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))])
    if n < 2:
        return float("nan"), float("nan")
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return m - half, m + half


CONTRIBUTIONS = [  # (row, method, compared with)
    ("source-only", "source_only", None),
    ("source-only + target BN statistics (AdaBN)", "source_only_adabn", "source_only"),
    ("warm-up", "adv_warmup", "source_only"),
    ("align, λ = 0", "align λ=0", "adv_warmup"),
    ("align (SPCL)", "align", "align λ=0"),
    ("self-train", "self_train", "align"),
    ("oracle (target labels)", "oracle", None),
    ("source domain (held-out source)", "source_domain", None),
]


def _miou(results, seed, method):
    r = results[seed].get(method)
    return None if r is None else r["mIoU"]


def _paired(results, a, b):
    """Per seed, mIoU of method `a` minus that of `b` (None where either is missing)."""
    return [None if _miou(results, s, a) is None or _miou(results, s, b) is None
            else _miou(results, s, a) - _miou(results, s, b) for s in results]


def contribution_table(results: dict) -> tuple[str, dict]:
    seeds = list(results)
    lines = [f"| stage | target val mIoU, mean ± std (seeds {', '.join(map(str, seeds))}) | per seed | "
             "vs | paired difference, mean ± std | per seed |", "|---|---|---|---|---|---|"]
    agg = {}
    for row, method, ref in CONTRIBUTIONS:
        vals = [_miou(results, s, method) for s in seeds]
        m, sd = mean_std(vals)
        per = ", ".join("–" if v is None else f"{v:.1f}" for v in vals)
        agg[method] = {"mean": m, "std": sd, "per_seed": vals}
        diff_txt = ["", "", ""]
        if ref:
            diffs = _paired(results, method, ref)
            dm, dsd = mean_std(diffs)
            agg[method]["vs"] = {"method": ref, "mean": dm, "std": dsd, "per_seed": diffs}
            ref_row = next(r for r, mm, _ in CONTRIBUTIONS if mm == ref)
            diff_txt = [ref_row, f"{dm:+.1f} ± {dsd:.1f}", ", ".join("–" if d is None else f"{d:+.1f}" for d in diffs)]
        lines.append(f"| {row} | {m:.1f} ± {sd:.1f} | {per} | " + " | ".join(diff_txt) + " |")
    return "\n".join(lines), agg


def pooled_results(paths: list[str]) -> dict:
    """The per-seed results of several toy_adaptation.json (or self_train_start.json) files (other runs,
    draws or machines of one config) as one {"<folder>:<seed>": {method: metrics}}, each entry still paired within its own run.
    A results folder holds one run, so two files from one folder (its toy_adaptation.json and the
    self_train_start.json that reused its seeds) would count those seeds twice: that is an error."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    for i, folder in enumerate(folders):
        if folder in folders[:i]:
            raise SystemExit(f"--pool: {paths[folders.index(folder)]} and {paths[i]} lie in one results folder, "
                             "so their seeds are the same runs; pool one file per run")
    labels = [os.path.basename(f) for f in folders]
    if len(set(labels)) < len(labels):
        labels = folders
    pooled = {}
    for path, label in zip(paths, labels):
        with open(path) as f:
            for seed, res in json.load(f)["results"].items():
                pooled[f"{label}:{seed}"] = res
    return pooled


START_STAGES = {"warmup": "adv_warmup", "lambda0": "align λ=0", "align": "align"}  # self_train_start.py's starts


def as_stage_results(seed_results: dict) -> dict:
    """One seed of a self_train_start.json ({start: row}) in this script's form ({method: {"mIoU": v}}):
    each start's own mIoU under its stage's name, and the self-training from align as "self_train" (the
    shipped pipeline's order). A seed already in this form comes back unchanged."""
    rows = {k: v for k, v in seed_results.items() if isinstance(v, dict) and "gain" in v}
    if not rows:
        return seed_results
    out = {START_STAGES[k]: {"mIoU": row["start"]} for k, row in rows.items()}
    if "align" in rows:
        out["self_train"] = {"mIoU": rows["align"]["self_train"]}
    return out


def pooled_table(results: dict) -> tuple[str, dict]:
    """Each paired difference of CONTRIBUTIONS over all entries of `results`: n, mean ± std, its
    standard error (std / √n), its 95 % t-interval, the smallest and the largest."""
    lines = ["| paired difference | n | mean ± std | standard error | 95 % t-interval | smallest | largest |",
             "|---|---|---|---|---|---|---|"]
    out = {}
    for row, method, ref in CONTRIBUTIONS:
        if not ref:
            continue
        diffs = [d for d in _paired(results, method, ref) if d is not None]
        if not diffs:
            continue
        m, sd = mean_std(diffs)
        se = sd / math.sqrt(len(diffs))
        ci = interval95(diffs)
        out[f"{method} - {ref}"] = {"n": len(diffs), "mean": m, "std": sd, "se": se, "ci95": ci, "min": min(diffs),
                                    "max": max(diffs)}
        ci_text = "–" if math.isnan(ci[0]) else f"{ci[0]:+.2f} to {ci[1]:+.2f}"
        lines.append(f"| {method} − {ref} | {len(diffs)} | {m:+.2f} ± {sd:.2f} | {se:.2f} | {ci_text} | "
                     f"{min(diffs):+.2f} | {max(diffs):+.2f} |")
    return "\n".join(lines), out


def targets_table(results: dict) -> tuple[str, dict]:
    seeds = list(results)
    paired = functools.partial(_paired, results)
    checks = [("source domain ≥ 60", [_miou(results, s, "source_domain") for s in seeds], 60.0),
              ("oracle ≥ 50", [_miou(results, s, "oracle") for s in seeds], 50.0),
              ("oracle − source-only ≥ 15", paired("oracle", "source_only"), 15.0),
              ("self-train − source-only ≥ 8", paired("self_train", "source_only"), 8.0),
              ("align − source-only ≥ 3", paired("align", "source_only"), 3.0),
              ("self-train − align ≥ 2", paired("self_train", "align"), 2.0)]
    lines = ["| target | mean | per seed | met |", "|---|---|---|---|"]
    out = {}
    for name, vals, bound in checks:
        m, _ = mean_std(vals)
        met = (not math.isnan(m)) and m >= bound
        out[name] = {"mean": m, "per_seed": vals, "met": met}
        lines.append(f"| {name} | {m:.1f} | {', '.join('–' if v is None else f'{v:.1f}' for v in vals)} | "
                     f"{'yes' if met else '**no**'} |")
    return "\n".join(lines), out


def control_table(results: dict) -> tuple[str, dict]:
    """Each adapted model paired per seed against source-only with target BN statistics (AdaBN): what
    the stages add beyond re-normalising the source model's features. Empty without that row."""
    seeds = list(results)
    if not any("source_only_adabn" in results[s] for s in seeds):
        return "", {}
    lines = ["| stage | − (source-only + AdaBN), paired mean ± std | per seed |", "|---|---|---|"]
    out = {}
    for row, method in [("warm-up", "adv_warmup"), ("align (SPCL)", "align"), ("self-train", "self_train")]:
        diffs = _paired(results, method, "source_only_adabn")
        m, sd = mean_std(diffs)
        out[method] = {"mean": m, "std": sd, "per_seed": diffs}
        lines.append(f"| {row} | {m:+.1f} ± {sd:.1f} | {', '.join('–' if d is None else f'{d:+.1f}' for d in diffs)} |")
    return "\n".join(lines), out


def sweep_table(results: dict) -> str:
    seeds = list(results)
    names = ["align λ=0"] + [f"align τ={t:g}{u}" for t in TAUS for u in ("", " unit")]
    if not any(n in results[s] for s in seeds for n in names[1:]):
        return ""
    lines = ["| align variant | mIoU mean ± std | vs λ = 0, paired | per seed | grad ratio src / tgt (mean) | "
             "L_cl src, last |", "|---|---|---|---|---|---|"]
    for n in names:
        vals = [results[s][n]["mIoU"] if n in results[s] else None for s in seeds]
        m, sd = mean_std(vals)
        diffs = [None if v is None or "align λ=0" not in results[s] else v - results[s]["align λ=0"]["mIoU"]
                 for v, s in zip(vals, seeds)]
        dm, dsd = mean_std(diffs)
        gs = mean_std([results[s][n].get("grad_ratio_src") for s in seeds if n in results[s]])[0]
        gt = mean_std([results[s][n].get("grad_ratio_tgt") for s in seeds if n in results[s]])[0]
        lc = mean_std([results[s][n].get("loss_cl_src_last") for s in seeds if n in results[s]])[0]
        lines.append(f"| {n} | {m:.1f} ± {sd:.1f} | {dm:+.1f} ± {dsd:.1f} | "
                     f"{', '.join('–' if d is None else f'{d:+.1f}' for d in diffs)} | {gs:.3g} / {gt:.3g} | {lc:.3f} |")
    return "\n".join(lines)


def class_table(results: dict) -> str:
    from spcl.data.labels import CLASSES_19

    seeds = list(results)
    methods = ["source_only", "source_only_adabn", "adv_warmup", "align λ=0", "align", "self_train", "oracle", "source_domain"]
    lines = ["| method | " + " | ".join(CLASSES_19) + " |", "|---|" + "---|" * len(CLASSES_19)]
    for m in methods:
        runs = [results[s][m] for s in seeds if m in results[s] and "IoU" in results[s][m]]
        if runs:
            iou = [mean_std([r["IoU"][k] for r in runs])[0] for k in range(len(CLASSES_19))]
            lines.append(f"| {m} | " + " | ".join("–" if math.isnan(v) else f"{v:.0f}" for v in iou) + " |")
    return "\n".join(lines)


def default_folders(config: str, output: str | None, results: str | None) -> tuple[str, str]:
    """(runs folder, tables folder): configs/toy.yaml keeps output/toy_bench and benchmarks/results;
    any other config gets folders of its own name, so one toy's results never overwrite another's."""
    stem = os.path.splitext(os.path.basename(config))[0]
    suffix = "" if stem == "toy" else stem
    output = output or os.path.join(ROOT, "output", "toy_bench" + (f"_{suffix}" if suffix else ""))
    results = results or os.path.join(ROOT, "benchmarks", "results", suffix)
    return output, results.rstrip(os.sep)


def _machine() -> str:
    """What the seeds ran on, for the results' footer: the GPU's name, or the CPU's core count."""
    import torch

    if torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name(0)} GPU ({os.cpu_count()} CPU cores)"
    return f"this {os.cpu_count()}-core CPU"


def main():
    global CONFIG
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.strip().splitlines()[1:]))
    parser.add_argument("--config", default=CONFIG, help="the toy config every run starts from")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweep", action="store_true", help="also align at τ ∈ {100,10,1,0.1} × unit prototypes")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, in separate processes")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (a handful of iterations)")
    parser.add_argument("--collect", action="store_true", help="only build the tables from the cached results")
    parser.add_argument("--prepare", action="store_true", help="only generate the datasets, then exit")
    parser.add_argument("--pool", nargs="+", default=None, metavar="JSON",
                        help="only print the tables over the seeds of several toy_adaptation.json files together "
                             "(each comparison still paired within its own run; a self_train_start.json adds its "
                             "warm-up, align λ = 0, align and self-train from align); runs nothing, writes nothing")
    parser.add_argument("--seed-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help="runs (default output/toy_bench, or "
                        "output/toy_bench_<config name> for another config)")
    parser.add_argument("--results", default=None, help="tables (default benchmarks/results, or "
                        "benchmarks/results/<config name> for another config)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides for every run, e.g. a larger toy: DATASETS.TOY.SIZE [160,80] "
                             "INPUT.SOURCE_SIZE [160,80] … (give its own --output, --results and DATASETS.DATA_DIR)")
    args = parser.parse_args()
    if args.pool:
        pooled = {key: as_stage_results(res) for key, res in pooled_results(args.pool).items()}
        print("\n\n".join([pooled_table(pooled)[0], targets_table(pooled)[0]]))
        return
    from spcl.utils.logger import setup_logger

    CONFIG = os.path.abspath(args.config)
    args.output, args.results = default_folders(CONFIG, args.output, args.results)

    base = list(QUICK) + ["DATASETS.DATA_DIR", os.path.join(args.output + "_quick", "data")] if args.quick else []
    base += args.opts
    out_root = args.output + ("_quick" if args.quick else "")
    if args.seed_worker is not None:  # one seed in this process
        import torch
        torch.set_num_threads(1)
        setup_logger()
        run_seed(args.seed_worker, out_root, base, args.sweep)
        return
    t0 = time.time()
    from make_toy import prepare_toy_data  # the datasets, once, before the seed processes share them
    prepare_toy_data(cfg_for(os.path.join(out_root, "data_prep"), 0, base))
    prepare_toy_data(cfg_for(os.path.join(out_root, "data_prep"), 0, base + heldout_opts(out_root)))
    if args.prepare:
        return
    def command(seed):
        cmd = [sys.executable, os.path.abspath(__file__), "--seed-worker", str(seed), "--output", args.output,
               "--config", CONFIG]
        cmd += ["--sweep"] if args.sweep else []
        cmd += ["--quick"] if args.quick else []
        return cmd + (["--opts", *args.opts] if args.opts else [])
    run_seed_processes([] if args.collect else args.seeds, command,
                       lambda seed: os.path.join(out_root, f"seed{seed}.log"), args.jobs)
    results = {s: json.load(open(os.path.join(out_root, f"seed{s}", "results.json"))) for s in args.seeds
               if os.path.isfile(os.path.join(out_root, f"seed{s}", "results.json"))}
    contrib, agg = contribution_table(results)
    targets, met = targets_table(results)
    control, control_agg = control_table(results)
    sweep = sweep_table(results)
    classes = class_table(results)
    minutes = (time.time() - t0) / 60
    command = "python benchmarks/toy_adaptation.py " + " ".join(sys.argv[1:])
    md = "\n\n".join(x for x in [contrib, targets, control, sweep, classes] if x)
    print(md)
    print(f"\n{len(args.seeds)} seeds in {minutes:.1f} min")
    if not args.quick:
        os.makedirs(args.results, exist_ok=True)
        from benchmarks.common import write_json

        write_json(os.path.join(args.results, "toy_adaptation.json"),
                   {"seeds": args.seeds, "minutes": minutes, "machine": _machine(), "command": command,
                    "results": results, "contributions": agg, "targets": met, "vs_adabn": control_agg},
                   indent=1, default=str)
        with open(os.path.join(args.results, "toy_adaptation.md"), "w") as f:
            when = ("collected from the cached per-seed results" if args.collect else
                    f"{minutes:.1f} min wall on {_machine()} ({args.jobs} seed(s) at a time, one torch thread each)")
            f.write(md + f"\n\n`{command}`: {when}.\n")


if __name__ == "__main__":
    main()
