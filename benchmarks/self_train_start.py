"""What self-training adds depends on where it starts: from warm-up, from align with λ = 0, from align.

    python benchmarks/self_train_start.py --config configs/toy_256.yaml --seeds 0 1 2 --jobs 3 [--starts lambda0 align]

A diagnostic; it chooses nothing. Self-training adds less after align than the issue's +2, and more
when run straight after warm-up (README, "What the toy run shows"). Two readings:

* overlap: align's target contrastive term already learns from the confident target pixels that
  self-training learns from, so the two stages' gains do not add up;
* room: any better starting model leaves self-training less to gain, whatever made it better.

Align with λ = 0 separates them: the same warm-up, prototypes, pseudo labels and source training as
align, without the contrastive term. If self-training adds about as much after it as after warm-up,
the term overlaps with self-training; if about as much as after align, the room explains it. The rule,
fixed before the first run: overlap when the gain from λ = 0 exceeds the gain from align by at least
0.5 on average and on every seed; room when the two gains are within 0.5 on average; otherwise neither
reading is supported by these seeds. A second draw of the toy is read by the same rule, on its own and
pooled with the first (--pool: every (draw, seed) pair, overlap needing every pair).

Per training seed, through the ordinary pipeline code, in toy_adaptation.py's folders (same --config
and --output reuse that benchmark's pipeline and λ = 0 checkpoints where they exist):

* the SPCL pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels → self-train);
* align with λ = 0 from the same inputs as align (toy_adaptation.py's `align_lambda=0`);
* for each start in --starts: pseudo labels from that start's checkpoint (warm-up and align reuse the
  pipeline's own), then self-training from it, with the config's self-training unchanged;
* with --label-opts KEY VALUE … (e.g. PSEUDO.THRESHOLD_CAP 1.0): every start, warm-up and align too,
  writes its own pseudo labels with those overrides and self-trains on them; the pipeline and λ = 0
  are the same runs as without.

Writes self_train_start.{md,json} into the results folder of toy_adaptation.py: per start, its own
mIoU, its pseudo labels (share kept, mIoU of the kept pixels), the self-trained mIoU and the gain,
paired per seed.
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

STARTS = ("warmup", "lambda0", "align")
LABELS = {"warmup": "warm-up", "lambda0": "align, λ = 0", "align": "align (SPCL)"}


def _path(folder: str, manifest: dict, key: str) -> str:
    return os.path.join(folder, manifest["outputs"][key])


def _row(start_miou: float, pl: dict, st: dict) -> dict:
    return {"start": start_miou, "kept_fraction": pl.get("kept_fraction"),
            "pseudo_label_mIoU": pl.get("pseudo_label_mIoU"), "self_train": st["mIoU"],
            "gain": st["mIoU"] - start_miou}


def label_tag(label_opts) -> str:
    """The suffix of the folders and cache of a start comparison whose pseudo labels and self-training
    take `label_opts` (KEY VALUE …): "" without any, else e.g. "_PSEUDO.THRESHOLD_CAP=1.0"."""
    return "".join(f"_{k}={v}" for k, v in zip(label_opts[::2], label_opts[1::2]))


def run_seed(seed: int, out_root: str, base: list[str], starts: list[str], label_opts=()) -> dict:
    """One seed: the pipeline, align λ = 0, then pseudo labels + self-training from every start →
    {start: row}; cached in <out>/seed<s>/self_train_start.json.

    With `label_opts` (config overrides for the pseudo labels and self-training only, e.g. another
    threshold cap), the pipeline and align λ = 0 are the same runs, but every start (warm-up and align
    too) writes its own pseudo labels with them and self-trains on those, in folders and a cache named
    with label_tag(label_opts)."""
    from make_toy import prepare_toy_data
    from spcl.engine.pipeline import read_manifest, run_pipeline, run_stage_once
    from spcl.utils.io import atomic_write_json

    label_opts = list(label_opts)
    tag = label_tag(label_opts)
    out = os.path.join(out_root, f"seed{seed}")
    run_dir = os.path.join(out, "spcl")
    cfg = ta.cfg_for(run_dir, seed, base)
    cache = os.path.join(out, f"self_train_start{tag}.json")
    res = ta.load_cache(cache, ta.config_key(ta.cfg_for(run_dir, seed, base + label_opts)))
    prepare_toy_data(cfg)
    summary = run_pipeline(cfg)  # finished stages are skipped (a benchmark run of the same config is reused)
    folders = [row["folder"] for row in summary["stages"]]  # 0_adv_warmup … 5_self_train
    stage = {key: read_manifest(os.path.join(run_dir, f)) for key, f in
             zip(("warmup", "pl_warmup", "align", "pl_align", "self_train"), [folders[0], *folders[2:]])}

    def labels_and_self_train(name: str, ckpt: str, pl: tuple[dict, str] | None = None) -> tuple[dict, dict]:
        """Pseudo labels from `ckpt` (unless `pl`, a finished pseudo-label stage's (manifest, folder), is
        given), then self-training on them from `ckpt` → (label metrics, self-training metrics)."""
        if pl is None:
            pl_folder = os.path.join(out, f"pseudo_labels_from_{name}{tag}")
            manifest, _ = run_stage_once(ta.cfg_for(pl_folder, seed, base + ["MODEL.WEIGHTS", ckpt, *label_opts]),
                                         "pseudo_labels", pl_folder)
            pl = (manifest, pl_folder)
        folder = os.path.join(out, f"self_train_from_{name}{tag}")
        st, _ = run_stage_once(ta.cfg_for(folder, seed, base + ["MODEL.WEIGHTS", ckpt, "DATASETS.PSEUDO_DIR",
                                                                 _path(pl[1], pl[0], "pseudo_dir"), *label_opts]),
                               "self_train", folder)
        return pl[0]["metrics"], st["metrics"]

    if "lambda0" in starts and "lambda0" not in res:
        folder = ta.align_folder(out, "align λ=0")  # toy_adaptation.py's folder: its finished run is reused
        al, _ = run_stage_once(ta.cfg_for(folder, seed, base + ta.align_inputs(run_dir)
                                          + ["LOSS.CONTRAST.WEIGHT", "0.0"]), "align", folder)
        res["lambda0"] = _row(al["metrics"]["mIoU"], *labels_and_self_train("lambda0", _path(folder, al, "checkpoint")))
        atomic_write_json(res, cache)
    if "warmup" in starts and "warmup" not in res:
        pl = None if label_opts else (stage["pl_warmup"], run_dir)  # the pipeline's own first-round labels
        res["warmup"] = _row(stage["warmup"]["metrics"]["mIoU"], *labels_and_self_train(
            "warmup", _path(run_dir, stage["warmup"], "checkpoint"), pl))
        atomic_write_json(res, cache)
    if "align" in starts and "align" not in res:
        if label_opts:
            row = labels_and_self_train("align", _path(run_dir, stage["align"], "checkpoint"))
        else:  # the pipeline's own second-round labels and self-training
            row = (stage["pl_align"]["metrics"], stage["self_train"]["metrics"])
        res["align"] = _row(stage["align"]["metrics"]["mIoU"], *row)
        atomic_write_json(res, cache)
    return res


def reading(diffs: list[float], margin: float = 0.5) -> str:
    """The rule fixed before the first run, on the per-seed (or per-run) differences gain from λ = 0 −
    gain from align: "overlap" when their mean is at least `margin` and every one is; "room" when the
    mean is within `margin` of zero; "neither" otherwise."""
    m = sum(diffs) / len(diffs)
    if m >= margin and all(d >= margin for d in diffs):
        return "overlap"
    return "room" if abs(m) < margin else "neither"


def within_seed_fit(x: list[list[float]], y: list[list[float]]) -> tuple[float, float]:
    """Least-squares slope of y on x and their correlation, after subtracting each seed's own mean from
    its x and its y (x[i], y[i]: one seed's values over the starts), so that a seed that is better
    everywhere does not make the fit. NaN for both when x or y does not vary within any seed."""
    dx = [v - sum(row) / len(row) for row in x for v in row]
    dy = [v - sum(row) / len(row) for row in y for v in row]
    sxy = sum(a * b for a, b in zip(dx, dy))
    sxx, syy = sum(a * a for a in dx), sum(b * b for b in dy)
    if sxx == 0 or syy == 0:  # one of them does not vary within any seed: no line to fit
        return float("nan"), float("nan")
    return sxy / sxx, sxy / (sxx * syy) ** 0.5


def per_seed(results: dict, seeds: list, starts: list[str], key: str) -> list[list[float]]:
    """results[seed][start][key] as one list over the starts per seed (within_seed_fit's x or y)."""
    return [[results[s][st][key] for st in starts] for s in seeds]


def label_anchor(results: dict, seeds: list, starts: list[str], summary: dict) -> list[str]:
    """Where self-training ends relative to the labels it trains on (a reading found after the first two
    runs; benchmarks/results/toy_256_cpu_seeds345/PLAN.md): within-seed slopes of the pseudo labels'
    kept-pixel mIoU on the start mIoU and of the self-trained mIoU on that label mIoU, and per start the
    mean ± std of self-trained − label mIoU. Adds them to `summary`; returns the Markdown lines."""
    def column(key):
        return per_seed(results, seeds, starts, key)
    labels_on_start = within_seed_fit(column("start"), column("pseudo_label_mIoU"))
    final_on_labels = within_seed_fit(column("pseudo_label_mIoU"), column("self_train"))
    offsets = {st: ta.mean_std([results[s][st]["self_train"] - results[s][st]["pseudo_label_mIoU"] for s in seeds])
               for st in starts}
    summary["labels_vs_start"] = dict(zip(("slope", "r"), labels_on_start))
    summary["final_vs_labels"] = dict(zip(("slope", "r"), final_on_labels))
    summary["final_minus_labels"] = {st: {"mean": m, "std": sd} for st, (m, sd) in offsets.items()}
    spread = max(m for m, _ in offsets.values()) - min(m for m, _ in offsets.values())
    summary["final_minus_labels"]["spread_of_means"] = spread
    return [f"Within seed, the pseudo labels' kept-pixel mIoU rises {labels_on_start[0]:+.2f} per point of start "
            f"mIoU (r = {labels_on_start[1]:+.2f}), and the self-trained mIoU {final_on_labels[0]:+.2f} per point "
            f"of label mIoU (r = {final_on_labels[1]:+.2f}). Self-trained − label mIoU: "
            + ", ".join(f"from {LABELS[st]} {m:+.1f} ± {sd:.1f}" for st, (m, sd) in offsets.items())
            + f" (means {spread:.1f} apart)."]


def start_table(results: dict, starts: list[str]) -> tuple[str, dict]:
    """results {seed: {start: row}} → (markdown, summary): per start, mean ± std over seeds of its own
    mIoU, its pseudo labels and the self-trained mIoU, and the paired gain with its per-seed values;
    then the gain of each start paired against the gain from align."""
    seeds = [s for s in results if all(st in results[s] for st in starts)]
    lines = [f"| self-training from | start mIoU | pseudo labels: kept, mIoU of kept | after self-training | "
             f"gain, paired mean ± std (seeds {', '.join(map(str, seeds))}) | per seed |", "|---|---|---|---|---|---|"]
    summary = {"seeds": seeds}
    for st in starts:
        rows = [results[s][st] for s in seeds]
        col = {k: ta.mean_std([r[k] for r in rows]) for k in ("start", "kept_fraction", "pseudo_label_mIoU",
                                                              "self_train", "gain")}
        summary[st] = {k: {"mean": m, "std": sd} for k, (m, sd) in col.items()}
        summary[st]["gain"]["per_seed"] = [r["gain"] for r in rows]
        lines.append(f"| {LABELS[st]} | {col['start'][0]:.1f} ± {col['start'][1]:.1f} | "
                     f"{100 * col['kept_fraction'][0]:.1f} %, {col['pseudo_label_mIoU'][0]:.1f} | "
                     f"{col['self_train'][0]:.1f} ± {col['self_train'][1]:.1f} | "
                     f"{col['gain'][0]:+.1f} ± {col['gain'][1]:.1f} | "
                     + ", ".join(f"{r['gain']:+.1f}" for r in rows) + " |")
    if len(starts) > 1 and len(seeds) > 1:
        slope, r = within_seed_fit(per_seed(results, seeds, starts, "start"), per_seed(results, seeds, starts, "gain"))
        summary["gain_vs_start"] = {"slope": slope, "r": r, "pairs": len(seeds) * len(starts)}
        lines += ["", f"Gain against start mIoU, each seed's own means taken out ({len(seeds) * len(starts)} "
                  f"(seed, start) pairs): slope {slope:+.2f} points per point, r = {r:+.2f}."]
        lines += ["", *label_anchor(results, seeds, starts, summary)]
    if "align" in starts and len(starts) > 1:
        lines += ["", "| | paired mean ± std | per seed |", "|---|---|---|"]
        for st in starts:
            if st == "align":
                continue
            d = [results[s][st]["gain"] - results[s]["align"]["gain"] for s in seeds]
            e = [results[s]["align"]["self_train"] - results[s][st]["self_train"] for s in seeds]
            for name, vals in ((f"gain from {LABELS[st]} − gain from align", d),
                               (f"final from align − final from {LABELS[st]}", e)):
                m, sd = ta.mean_std(vals)
                summary[name] = {"mean": m, "std": sd, "per_seed": vals}
                lines.append(f"| {name} | {m:+.1f} ± {sd:.1f} | {', '.join(f'{v:+.1f}' for v in vals)} |")
        if "lambda0" in starts:
            d = summary["gain from align, λ = 0 − gain from align"]
            summary["reading"] = reading(d["per_seed"])
            d["se"] = d["std"] / len(d["per_seed"]) ** 0.5
            d["ci95"] = ta.interval95(d["per_seed"])
            lines += ["", f"Reading by the rule fixed before the first run (overlap: gain from λ = 0 − gain from "
                      f"align ≥ 0.5 on average and on every seed; room: within 0.5 on average): "
                      f"**{summary['reading']}** ({d['mean']:+.2f} ± {d['std']:.2f} over {len(d['per_seed'])}, "
                      f"standard error {d['se']:.2f}, 95 % t-interval {d['ci95'][0]:+.2f} to {d['ci95'][1]:+.2f})."]
    return "\n".join(lines), summary


COMPARED = (("kept_fraction", "kept share, points", 100.0), ("pseudo_label_mIoU", "label mIoU of kept", 1.0),
            ("self_train", "after self-training", 1.0), ("gain", "gain", 1.0))


def compare_runs(new: dict, old: dict, starts: list[str]) -> tuple[str, dict]:
    """Two start comparisons of the same seeds and checkpoints that differ in their labels (e.g.
    --label-opts against none), {seed: {start: row}} each → (markdown, summary): per start and quantity,
    new − old paired per seed, mean ± std and the per-seed values; then the within-seed slope of label
    mIoU on start mIoU in each run. Seeds missing from either run are left out."""
    seeds = [s for s in new if s in old and all(st in new[s] and st in old[s] for st in starts)]
    lines = [f"| from | quantity | new − old, paired mean ± std (seeds {', '.join(map(str, seeds))}) | per seed |",
             "|---|---|---|---|"]
    summary = {"seeds": seeds}
    for st in starts:
        for key, name, scale in COMPARED:
            d = [scale * (new[s][st][key] - old[s][st][key]) for s in seeds]
            m, sd = ta.mean_std(d)
            summary[f"{st}: {key}"] = {"mean": m, "std": sd, "per_seed": d}
            lines.append(f"| {LABELS[st]} | {name} | {m:+.2f} ± {sd:.2f} | {', '.join(f'{v:+.2f}' for v in d)} |")
    if len(starts) > 1:
        fits = {}
        for label, res in (("new", new), ("old", old)):
            fits[label] = within_seed_fit(per_seed(res, seeds, starts, "start"),
                                          per_seed(res, seeds, starts, "pseudo_label_mIoU"))
            summary[f"labels_vs_start {label}"] = dict(zip(("slope", "r"), fits[label]))
        lines += ["", "Label mIoU per point of start mIoU, within seed: new {:+.2f} (r = {:+.2f}), old {:+.2f} "
                  "(r = {:+.2f}).".format(*fits["new"], *fits["old"])]
    return "\n".join(lines), summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.strip().splitlines()[1:]))
    parser.add_argument("--config", default=ta.CONFIG, help="the toy config (toy_adaptation.py's --config)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--starts", nargs="+", choices=STARTS, default=list(STARTS),
                        help="where self-training starts (default: all three)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, in separate processes")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (toy_adaptation.py's --quick)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides (toy_adaptation.py's --opts, e.g. another draw of the toy)")
    parser.add_argument("--label-opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides for the pseudo labels and self-training of every start only, e.g. "
                             "PSEUDO.THRESHOLD_CAP 1.0: the pipeline and align λ = 0 are reused, every start writes "
                             "its own labels with them (folders and cache suffixed KEY=VALUE)")
    parser.add_argument("--output", default=None, help="runs (toy_adaptation.py's default)")
    parser.add_argument("--results", default=None, help="tables (toy_adaptation.py's default)")
    parser.add_argument("--collect", action="store_true", help="only build the tables from the cached results")
    parser.add_argument("--pool", nargs="+", default=None, metavar="JSON",
                        help="print one table over the seeds of several self_train_start.json files (other draws "
                             "or machines), each seed still paired within its own run, and the rule's reading "
                             "over all of them")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("NEW", "OLD"),
                        help="print NEW − OLD (two self_train_start.json files of the same seeds, e.g. with and "
                             "without --label-opts) per start, paired per seed; runs nothing, writes nothing")
    parser.add_argument("--seed-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if len(args.label_opts) % 2:
        parser.error(f"--label-opts takes KEY VALUE pairs, got {len(args.label_opts)} words: {args.label_opts}")
    if args.compare:
        new, old = (json.load(open(p))["results"] for p in args.compare)
        print(compare_runs(new, old, args.starts)[0])
        return
    if args.pool:
        print(start_table(ta.pooled_results(args.pool), args.starts)[0])
        return
    ta.CONFIG = os.path.abspath(args.config)
    args.output, results_dir = ta.default_folders(ta.CONFIG, args.output, args.results)
    out_root = args.output + ("_quick" if args.quick else "")
    base = (list(ta.QUICK) + ["DATASETS.DATA_DIR", os.path.join(out_root, "data")] if args.quick else []) + args.opts
    if args.seed_worker is not None:
        import torch

        from spcl.utils.logger import setup_logger
        torch.set_num_threads(1)
        setup_logger()
        run_seed(args.seed_worker, out_root, base, args.starts, args.label_opts)
        return
    t0 = time.time()
    from make_toy import prepare_toy_data  # the dataset, once, before the seed processes share it
    prepare_toy_data(ta.cfg_for(os.path.join(out_root, "data_prep"), 0, base))

    def command(seed):
        cmd = [sys.executable, os.path.abspath(__file__), "--seed-worker", str(seed), "--config", ta.CONFIG,
               "--output", args.output, "--starts", *args.starts]
        return (cmd + (["--quick"] if args.quick else []) + (["--opts", *args.opts] if args.opts else [])
                + (["--label-opts", *args.label_opts] if args.label_opts else []))
    ta.run_seed_processes([] if args.collect else args.seeds, command, lambda s: os.path.join(out_root, f"self_train_start_seed{s}.log"),
                          args.jobs)
    results = {s: json.load(open(os.path.join(out_root, f"seed{s}", f"self_train_start{label_tag(args.label_opts)}.json")))
               for s in args.seeds}
    table, summary = start_table(results, args.starts)
    minutes = (time.time() - t0) / 60
    command = "python benchmarks/self_train_start.py " + " ".join(sys.argv[1:])
    print(table)
    print(f"\n{len(args.seeds)} seeds in {minutes:.1f} min")
    if args.quick:
        return
    os.makedirs(results_dir, exist_ok=True)
    from benchmarks.common import write_json

    write_json(os.path.join(results_dir, "self_train_start.json"),
               {"seeds": args.seeds, "starts": args.starts, "minutes": minutes, "machine": ta._machine(),
                "command": command, "results": results, "summary": summary}, indent=1)
    with open(os.path.join(results_dir, "self_train_start.md"), "w") as f:
        when = ("collected from the cached per-seed results" if args.collect else
                f"{minutes:.1f} min wall on {ta._machine()} ({args.jobs} seed(s) at a time, one torch thread each)")
        f.write(table + f"\n\n`{command}`: {when}.\n")


if __name__ == "__main__":
    main()
