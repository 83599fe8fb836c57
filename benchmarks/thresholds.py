"""Benchmark: class-wise confidence thresholds over a simulated target set (docs/method.md "Pseudo labels").

Softmax maps of K×H×W (19×512×1024, Cityscapes at the model's input size) are generated batch by
batch from a seeded generator (smooth random logits, so confidences spread over [0, 1] and some
class medians exceed the 0.9 cap) and fed to
  * this project: `ClassThresholds.update` (per-class histograms, 65,536 bins) then `compute`;
  * the released algorithm (`benchmarks/reference.py`): every confidence and label appended with
    `np.append`, then a sort per class.
Each run is a fresh process. Reported: seconds spent in the threshold code (generation excluded),
peak memory above the start of the loop for 10, 20 and 40 maps (growth with the number of images)
and for the timed run, and the largest threshold difference to the exact sort.

    python benchmarks/thresholds.py [--quick] [--maps N] [--threads T]
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import PeakMemory, format_table, run_worker  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

FULL = {"K": 19, "H": 512, "W": 1024, "batch": 2, "maps": 100, "memory_maps": [10, 20, 40]}
QUICK = {"K": 19, "H": 64, "W": 128, "batch": 2, "maps": 8, "memory_maps": [2, 4, 8]}


def softmax_batches(size: dict, n_maps: int, seed: int = 0):
    """Yield B×K×H×W softmax maps (n_maps in all): smooth logits (random at 1/16 resolution,
    bilinearly upsampled) with a per-class bias, so classes have different confidence levels."""
    g = torch.Generator().manual_seed(seed)
    K, H, W, B = size["K"], size["H"], size["W"], size["batch"]
    bias = torch.linspace(-0.5, 2.5, K, dtype=torch.float32)[None, :, None, None]
    scale = torch.linspace(1.0, 10.0, K, dtype=torch.float32)[None, :, None, None]
    done = 0
    while done < n_maps:
        b = min(B, n_maps - done)
        coarse = torch.randn(b, K, max(H // 16, 1), max(W // 16, 1), generator=g) * scale + bias
        logits = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
        yield torch.softmax(logits, dim=1)
        done += b


def task_run(task: dict) -> dict:
    size, impl, n = task["size"], task["impl"], task["maps"]
    if impl == "ours":
        from spcl.pseudo import ClassThresholds
        stats = ClassThresholds(size["K"], 0.9, 65536)
    else:
        from benchmarks.reference import ReferenceThresholds
        stats = ReferenceThresholds(size["K"], 0.9)
    seconds = 0.0
    with PeakMemory() as m:
        for probs in softmax_batches(size, n):
            t = time.perf_counter()
            stats.update(probs)
            seconds += time.perf_counter() - t
            del probs
        t = time.perf_counter()
        thresholds = stats.compute()
        seconds += time.perf_counter() - t
    return {"seconds": seconds, "peak_mb": m.peak_mb, "method": m.method,
            "thresholds": [float(v) for v in thresholds]}


def task_generate(task: dict) -> dict:
    """Peak of the generation alone (the floor under both implementations' peaks)."""
    with PeakMemory() as m:
        t = time.perf_counter()
        for probs in softmax_batches(task["size"], task["maps"]):
            del probs
    return {"seconds": time.perf_counter() - t, "peak_mb": m.peak_mb}


HANDLERS = {"run": task_run, "generate": task_generate}


def main():
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--maps", type=int, default=None, help="maps in the timed run")
    args = p.parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.maps:
        size["maps"] = args.maps
    script, thr = os.path.abspath(__file__), args.threads
    res = {"machine": common.machine_info(thr), "size": size, "impl": {}}
    gen = run_worker(script, {"kind": "generate", "size": size, "maps": size["memory_maps"][-1]}, thr)
    res["generation_only"] = gen
    for impl in ("reference", "ours"):
        r = {"memory_by_maps": {}}
        for n in size["memory_maps"]:
            out = run_worker(script, {"kind": "run", "impl": impl, "size": size, "maps": n}, thr)
            r["memory_by_maps"][n] = out["peak_mb"]
        out = run_worker(script, {"kind": "run", "impl": impl, "size": size, "maps": size["maps"]}, thr)
        r.update(seconds=out["seconds"], peak_mb=out["peak_mb"], thresholds=out["thresholds"], method=out["method"])
        mm = r["memory_by_maps"]
        r["growth_mb"] = mm[size["memory_maps"][-1]] - mm[size["memory_maps"][0]]
        res["impl"][impl] = r
    ref, ours = res["impl"]["reference"], res["impl"]["ours"]
    res["max_threshold_diff"] = max(abs(a - b) for a, b in zip(ref["thresholds"], ours["thresholds"]))
    res["speedup"] = ref["seconds"] / ours["seconds"]
    res["targets"] = {"flat_memory(<50MB growth)": ours["growth_mb"] < 50,
                      "no_slower_than_reference": res["speedup"] >= 1.0,
                      "thresholds_within_1e-4": res["max_threshold_diff"] <= 1e-4}
    n0, n1 = size["memory_maps"][0], size["memory_maps"][-1]
    headers = ["implementation", f"s ({size['maps']} maps)", "maps/s"] + \
        [f"peak MB @{n}" for n in size["memory_maps"]] + [f"growth {n0}→{n1} MB", f"peak MB @{size['maps']}"]
    rows = [[impl, r["seconds"], size["maps"] / r["seconds"], *r["memory_by_maps"].values(), r["growth_mb"], r["peak_mb"]]
            for impl, r in res["impl"].items()]
    rows.append(["ratio ref/ours", res["speedup"], "", *[ref["memory_by_maps"][n] / max(ours["memory_by_maps"][n], 1e-9)
                                                       for n in size["memory_maps"]], "",
                 ref["peak_mb"] / max(ours["peak_mb"], 1e-9)])
    print(f"class thresholds over {size['maps']} softmax maps {size['K']}×{size['H']}×{size['W']} (batch {size['batch']}), "
          f"{thr} thread(s); generation alone: peak {gen['peak_mb']:.0f} MB")
    print(format_table(headers, rows))
    print(f"largest threshold difference to the exact sort: {res['max_threshold_diff']:.2e} (bin width "
          f"{1 / 65536:.2e})")
    print("targets:", res["targets"])
    print("written", common.write_results("thresholds", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
