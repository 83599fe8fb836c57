"""Self-training's learning curve on the benchmark toy, per seed, paired against align.

Target-val mIoU every N iterations of the self_train stage, from the align checkpoint it starts from.

    python benchmarks/self_train_curve.py --config configs/toy_256.yaml --seeds 0 1 2 --jobs 3
    python benchmarks/self_train_curve.py --config configs/toy_256.yaml --name warmup20 --opts KEY VALUE …
    python benchmarks/self_train_curve.py --config configs/toy_256.yaml --output output/toy_bench_draw1 \
        --bench-opts DATASETS.TOY.SEED 1 DATASETS.DATA_DIR datasets/toy_256_draw1   # a benchmark run with --opts
    python benchmarks/self_train_curve.py --compare RESULTS/self_train_curve_it400.json RESULTS/self_train_curve_it200.json

It reruns the self_train stage of each seed of benchmarks/toy_adaptation.py (same --config and
--output) from that seed's align checkpoint and second-round pseudo labels, with SOLVER.EVAL_PERIOD
--every, into <output>/seed<s>/self_train_curve[_<name>]; a finished run is read back, not rerun.
Iteration 0 is the align checkpoint's own score from the benchmark cache (results.json), or, for a seed
that benchmarks/self_train_start.py ran instead, from its self_train_start.json. Evaluation does not change
training, so the last point repeats the benchmark's self-train row up to the torch thread count.
Writes self_train_curve[_<name>].{md,json} into the results folder of toy_adaptation.py, with each
seed's training loss on its pseudo labels at the end (the mean over the last SOLVER.LOG_PERIOD
iterations). --collect rebuilds them from finished runs without training, keeping the recorded minutes;
--compare NEW OLD prints the end of one variant minus another's, paired per seed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the benchmarks package (toy_adaptation adds tools/ itself)

from benchmarks import toy_adaptation as ta  # noqa: E402


def _rows(metrics_path: str):
    """The rows of a stage's metrics.json (JSON lines, blank lines skipped), in order."""
    with open(metrics_path) as f:
        yield from (json.loads(line) for line in f if line.strip())


def read_curve(metrics_path: str) -> dict[int, float]:
    """{iteration: target-val mIoU} from a stage's metrics.json (rows without `val/mIoU` are training
    logs and are skipped; a repeated iteration keeps its last value)."""
    from spcl.utils.io import number  # null (a NaN in standard JSON) as NaN

    return {int(row["iteration"]): float(number(row["val/mIoU"])) for row in _rows(metrics_path) if "val/mIoU" in row}


def last_loss(metrics_path: str, key: str = "loss_seg_tgt") -> float | None:
    """The training loss `key` of the last training row of a stage's metrics.json (each row the mean over
    one SOLVER.LOG_PERIOD window), or None when no row has it."""
    from spcl.utils.io import number

    found = [float(number(row[key])) for row in _rows(metrics_path) if key in row]
    return found[-1] if found else None


def compare_curves(new: dict, old: dict) -> tuple[str, dict]:
    """Two self_train_curve JSON files (variants from the same align checkpoints) → (markdown, summary):
    per seed in both, the variant's last evaluation minus the other's (paired), and the same for the
    final training loss where both recorded it. Seeds missing from either are left out."""
    from spcl.utils.io import number  # a NaN evaluation is null in the file

    seeds = [s for s in new["curves"] if s in old["curves"]]

    def end(res, s):
        curve = res["curves"][s]
        return number(curve[max(curve, key=int)])

    d = [end(new, s) - end(old, s) for s in seeds]
    m, sd = ta.mean_std(d)
    summary = {"seeds": [int(s) for s in seeds], "end": {"mean": m, "std": sd, "per_seed": d}}
    lines = [f"| new − old, paired (seeds {', '.join(seeds)}) | mean ± std | per seed |", "|---|---|---|",
             f"| target-val mIoU at the end | {m:+.2f} ± {sd:.2f} | {', '.join(f'{v:+.2f}' for v in d)} |"]
    if all(new.get("final_loss", {}).get(s) is not None and old.get("final_loss", {}).get(s) is not None
           for s in seeds):
        dl = [new["final_loss"][s] - old["final_loss"][s] for s in seeds]
        ml, sdl = ta.mean_std(dl)
        summary["final_loss"] = {"mean": ml, "std": sdl, "per_seed": dl}
        lines.append(f"| training loss at the end | {ml:+.4f} ± {sdl:.4f} | {', '.join(f'{v:+.4f}' for v in dl)} |")
    return "\n".join(lines), summary


def curve_table(curves: dict, start: dict) -> tuple[str, dict]:
    """curves {seed: {iteration: mIoU}}, start {seed: align mIoU} → (markdown, summary). Each row an
    iteration that every seed evaluated: per-seed mIoU, their mean, and the mean of the per-seed
    differences to align (paired). The summary names the lowest and the last row."""
    seeds = list(curves)
    iters = sorted(set.intersection(*(set(c) for c in curves.values()))) if curves else []
    rows = [(0, [start[s] for s in seeds])] + [(it, [curves[s][it] for s in seeds]) for it in iters if it > 0]
    lines = [f"| iteration | mIoU per seed ({', '.join(map(str, seeds))}) | mean | − align, paired mean ± std |",
             "|---|---|---|---|"]
    out = {"iterations": [], "mean": [], "vs_align": [], "vs_align_std": []}
    for it, vals in rows:
        diffs = [v - start[s] for v, s in zip(vals, seeds)]
        m, _ = ta.mean_std(vals)
        dm, dsd = ta.mean_std(diffs)
        out["iterations"].append(it)
        out["mean"].append(m)
        out["vs_align"].append(dm)
        out["vs_align_std"].append(dsd)
        label = "0 (align)" if it == 0 else str(it)
        lines.append(f"| {label} | {', '.join(f'{v:.1f}' for v in vals)} | {m:.1f} | {dm:+.1f} ± {dsd:.1f} |")
    if len(rows) > 1:
        low = min(range(1, len(rows)), key=lambda i: out["vs_align"][i])
        out["lowest"] = {"iteration": out["iterations"][low], "vs_align": out["vs_align"][low]}
        out["last"] = {"iteration": out["iterations"][-1], "vs_align": out["vs_align"][-1]}
    return "\n".join(lines), out


def _benchmark_manifest(out_root: str, seed: int) -> str:
    """The manifest of the benchmark's self_train stage of `seed` (its inputs are this curve's)."""
    manifest = os.path.join(out_root, f"seed{seed}", "spcl", "5_self_train", "manifest.json")
    if not os.path.isfile(manifest):
        raise SystemExit(f"{manifest} is missing: run benchmarks/toy_adaptation.py (or self_train_start.py) with "
                         "the same --config and --output first (this curve starts from its align checkpoint and "
                         "pseudo labels)")
    return manifest


def align_score(out_root: str, seed: int, bench_opts: list[str]) -> float:
    """The target-val mIoU of `seed`'s align checkpoint, from the cache of the run that trained it:
    toy_adaptation.py's results.json (row "align") or, where that is absent, self_train_start.py's
    self_train_start.json (its "align" start). Both are stamped with the digest of the config they ran
    with (`bench_opts` = their --opts); another config's cache stops here, naming --bench-opts."""
    run_dir = os.path.join(out_root, f"seed{seed}", "spcl")
    bench = os.path.join(out_root, f"seed{seed}", "results.json")
    start = os.path.join(out_root, f"seed{seed}", "self_train_start.json")
    cache = bench if os.path.isfile(bench) or not os.path.isfile(start) else start
    try:
        res = ta.load_cache(cache, ta.config_key(ta.cfg_for(run_dir, seed, bench_opts)))
    except SystemExit as e:
        raise SystemExit(f"{e} (--bench-opts must repeat the --opts toy_adaptation.py or self_train_start.py "
                         f"ran with; given: {' '.join(bench_opts) or 'none'})") from None
    try:
        return float(res["align"]["mIoU"] if cache == bench else res["align"]["start"])
    except KeyError:
        raise SystemExit(f"{cache} has no align score: finish the run that writes it "
                         "(benchmarks/toy_adaptation.py, or self_train_start.py with the align start)") from None


def curve_config(seed: int, out_root: str, every: int, name: str, opts: list[str], bench_opts: list[str]):
    """(config, folder) of one seed's curve run: the benchmark's config (`bench_opts` = the --opts
    toy_adaptation.py ran with) from that seed's align checkpoint and second-round pseudo labels,
    evaluated every `every` iterations, then the variant's `opts`. Stops, naming --bench-opts, when the
    cache of the run that trained it was made with another config (align_score)."""
    run_dir = os.path.join(out_root, f"seed{seed}", "spcl")
    manifest = _benchmark_manifest(out_root, seed)
    align_score(out_root, seed, bench_opts)
    handed = json.load(open(manifest))["inputs"]
    folder = os.path.join(out_root, f"seed{seed}", "self_train_curve" + (f"_{name}" if name else ""))
    cfg = ta.cfg_for(folder, seed, [*bench_opts, "MODEL.WEIGHTS", os.path.join(run_dir, handed["checkpoint"]),
                                    "DATASETS.PSEUDO_DIR", os.path.join(run_dir, handed["pseudo_dir"]),
                                    "SOLVER.EVAL_PERIOD", str(every), *opts])
    return cfg, folder


def run_seed(seed: int, out_root: str, every: int, name: str, opts: list[str], bench_opts: list[str]) -> str:
    """Run (or read back) one seed's self-training with evaluations; returns its stage folder."""
    from spcl.engine.pipeline import run_stage_once
    from spcl.utils.logger import setup_logger

    cfg, folder = curve_config(seed, out_root, every, name, opts, bench_opts)
    setup_logger(folder)
    run_stage_once(cfg, "self_train", folder, root=folder)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.strip().splitlines()[1:]))
    parser.add_argument("--config", default=ta.CONFIG, help="the toy config of the benchmark runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--every", type=int, default=20, help="iterations between evaluations (default 20)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, in separate processes")
    parser.add_argument("--name", default="", help="a variant's name (its folders and result files)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides of the variant")
    parser.add_argument("--bench-opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="the --opts benchmarks/toy_adaptation.py ran with (e.g. another draw of the toy)")
    parser.add_argument("--output", default=None, help="the benchmark's runs (toy_adaptation.py's default)")
    parser.add_argument("--results", default=None, help="tables (toy_adaptation.py's default)")
    parser.add_argument("--collect", action="store_true",
                        help="only rebuild the tables from finished runs (the recorded minutes are kept)")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("NEW", "OLD"),
                        help="print NEW − OLD (two self_train_curve_*.json of the same seeds) paired per seed; "
                             "runs nothing, writes nothing")
    parser.add_argument("--seed-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        new, old = (json.load(open(p)) for p in args.compare)
        print(compare_curves(new, old)[0])
        return
    ta.CONFIG = os.path.abspath(args.config)
    out_root, results_dir = ta.default_folders(ta.CONFIG, args.output, args.results)
    if args.seed_worker is not None:
        import torch
        torch.set_num_threads(1)
        run_seed(args.seed_worker, out_root, args.every, args.name, args.opts, args.bench_opts)
        return
    for seed in args.seeds:  # every seed's benchmark run exists and is of this config, before any process starts
        curve_config(seed, out_root, args.every, args.name, args.opts, args.bench_opts)
    t0 = time.time()
    ta.run_seed_processes(
        [] if args.collect else args.seeds,
        lambda seed: [sys.executable, os.path.abspath(__file__), "--seed-worker", str(seed), "--config", ta.CONFIG,
                      "--output", out_root, "--every", str(args.every), "--name", args.name]
        + (["--opts", *args.opts] if args.opts else [])
        + (["--bench-opts", *args.bench_opts] if args.bench_opts else []),
        lambda seed: os.path.join(out_root, f"self_train_curve_seed{seed}.log"), args.jobs)
    suffix = f"_{args.name}" if args.name else ""
    curves, start, losses = {}, {}, {}
    for s in args.seeds:
        folder = os.path.join(out_root, f"seed{s}", "self_train_curve" + suffix)
        curves[s] = read_curve(os.path.join(folder, "metrics.json"))
        losses[s] = last_loss(os.path.join(folder, "metrics.json"))
        start[s] = align_score(out_root, s, args.bench_opts)
    table, summary = curve_table(curves, start)
    loss_mean, _ = ta.mean_std(list(losses.values()))
    table += ("\n\nTraining loss on the pseudo labels at the end (mean over the last SOLVER.LOG_PERIOD "
              f"iterations): {', '.join('n/a' if v is None else f'{v:.4f}' for v in losses.values())}; "
              f"mean {loss_mean:.4f}.")
    minutes = (time.time() - t0) / 60
    command = "python benchmarks/self_train_curve.py " + " ".join(sys.argv[1:])
    json_path = os.path.join(results_dir, f"self_train_curve{suffix}.json")
    when = f"{minutes:.1f} min wall on {ta._machine()} ({args.jobs} seed(s) at a time, one torch thread each)"
    if args.collect and os.path.isfile(json_path):  # keep what the run that trained them recorded
        recorded = json.load(open(json_path))
        minutes, command = recorded["minutes"], recorded["command"]
        when = f"{minutes:.1f} min wall as recorded; tables rebuilt with --collect"
    elif args.collect:
        minutes, when = None, "collected from finished runs, no time recorded"
    print(table)
    if "lowest" in summary:
        print(f"\nlowest: iteration {summary['lowest']['iteration']}, {summary['lowest']['vs_align']:+.1f} against "
              f"align; last: iteration {summary['last']['iteration']}, {summary['last']['vs_align']:+.1f}")
    print(f"{len(args.seeds)} seeds: {when}")
    os.makedirs(results_dir, exist_ok=True)
    from benchmarks.common import write_json

    write_json(json_path, {"seeds": args.seeds, "minutes": minutes, "command": command, "opts": args.opts,
                           "bench_opts": args.bench_opts, "align": start,
                           "curves": {str(s): c for s, c in curves.items()},
                           "final_loss": {str(s): v for s, v in losses.items()}, "summary": summary}, indent=1)
    with open(os.path.join(results_dir, f"self_train_curve{suffix}.md"), "w") as f:
        f.write(table + f"\n\n`{command}`: {when}.\n")


if __name__ == "__main__":
    main()
