"""Benchmark: peak memory of the data preflight (`spcl.data.check.check_dataset`) is flat in the number of files.

N generated image/label PNG pairs at the Cityscapes resolution 2048×1024 in the GTA5 layout (flat
colour images and labelIds in a few blocks, so writing them is quick; the checks read every chunk of
every image and decode every label, whatever its content) are checked for N = 50, 100, 200, each N in
a fresh process after a one-item warm-up (imports and lookup tables are not counted). Reported: the
peak resident memory of the check above its start (`benchmarks/common.py: PeakMemory`), the memory
still held after it, and the time per item. Flat means: the peak does not grow with N (the only
per-item state kept is the list-file entry of each good item, a short string).

    python benchmarks/check_data_memory.py [--quick] [--sizes 50 100 200]
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

FULL = {"sizes": [50, 100, 200], "W": 2048, "H": 1024}
QUICK = {"sizes": [5, 10, 20], "W": 512, "H": 256}


def make_data(root: str, n: int, W: int, H: int) -> None:
    """`root/gta5/{images,labels}/NNNNN.png`: n flat-colour RGB images and palette labelId maps."""
    from PIL import Image

    from spcl.data.labels import cityscapes_labelid_palette

    img_dir, lab_dir = os.path.join(root, "gta5", "images"), os.path.join(root, "gta5", "labels")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(lab_dir, exist_ok=True)
    pal = cityscapes_labelid_palette()
    for i in range(n):
        image = np.empty((H, W, 3), np.uint8)
        image[: H // 2] = (70 + i % 50, 130, 180)  # sky
        image[H // 2:] = (128, 64, 128 - i % 50)  # road
        label = np.full((H, W), 23, np.uint8)
        label[H // 2:] = 7
        label[H // 2: H // 2 + H // 8, (i * 37) % (W // 2): (i * 37) % (W // 2) + W // 4] = 26  # a car
        lab = Image.fromarray(label, "P")
        lab.putpalette(pal)
        name = f"{i:05d}.png"
        Image.fromarray(image).save(os.path.join(img_dir, name), compress_level=1)
        lab.save(os.path.join(lab_dir, name), compress_level=1)


def task_check(task: dict) -> dict:
    from spcl.data.check import check_dataset
    from spcl.data.datasets import GTA5Dataset

    root, n = task["root"], task["n"]
    list_file = os.path.join(root, f"list_{n}.txt")
    with open(list_file, "w") as f:
        f.writelines(f"{i:05d}.png\n" for i in range(n))
    dataset = GTA5Dataset(os.path.join(root, "gta5"), None, list_file, 19, "required")
    warm = GTA5Dataset(os.path.join(root, "gta5"), None, list_file, 19, "required")
    warm.items = warm.items[:1]
    check_dataset(warm, "warm-up")  # imports, lookup table, PIL plugins
    t = time.perf_counter()
    with PeakMemory() as m:
        result = check_dataset(dataset, "gta5_train")
    seconds = time.perf_counter() - t
    assert result.ok and len(result.clean) == n, result.bad_lines()[:3]
    return {"n": n, "peak_mb": m.peak_mb, "retained_mb": m.end_rss_mb, "method": m.method, "seconds": seconds,
            "ms_per_item": seconds / n * 1000, "files": result.num_files}


HANDLERS = {"check": task_check}


def main():
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of image/label pairs")
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.sizes:
        cfg["sizes"] = sorted(args.sizes)
    script, thr = os.path.abspath(__file__), args.threads
    root = tempfile.mkdtemp(prefix="spcl_check_bench_")
    try:
        t = time.perf_counter()
        make_data(root, max(cfg["sizes"]), cfg["W"], cfg["H"])
        gen_s = time.perf_counter() - t
        runs = [run_worker(script, {"kind": "check", "root": root, "n": n}, thr) for n in cfg["sizes"]]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    decoded_mb = cfg["W"] * cfg["H"] * 4 / 2**20  # one RGB image + one uint8 label, decoded
    peaks = [r["peak_mb"] for r in runs]
    res = {"machine": common.machine_info(thr), "size": cfg, "generate_s": gen_s, "runs": runs,
           "one_decoded_pair_mb": decoded_mb, "peak_spread_mb": max(peaks) - min(peaks),
           "peak_growth_per_100_items_mb": (peaks[-1] - peaks[0]) / (cfg["sizes"][-1] - cfg["sizes"][0]) * 100}
    print(f"check_dataset memory: N pairs {cfg['W']}×{cfg['H']} (GTA5 layout), fresh process per N, "
          f"{thr} thread(s); data written in {gen_s:.1f} s; one decoded image+label = {decoded_mb:.1f} MB")
    print(format_table(["N pairs", "files", "peak RSS growth (MB)", "retained (MB)", "seconds", "ms/pair"],
                       [[r["n"], r["files"], r["peak_mb"], r["retained_mb"], r["seconds"], r["ms_per_item"]]
                        for r in runs]))
    print(f"peak spread over N: {res['peak_spread_mb']:.2f} MB "
          f"({res['peak_growth_per_100_items_mb']:+.2f} MB per 100 pairs)")
    print("written", common.write_results("check_data_memory", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
