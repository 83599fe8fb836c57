"""Benchmark: peak memory of the pseudo-label stage (`spcl.engine.stages.PseudoLabelsStage`, what
tools/gen_pseudo.py runs) is flat in the number of target images.

N generated Cityscapes-layout train images at the real resolution 2048×1024 (flat-colour PNGs, quick
to write; decoding and the model pass do not depend on the content), a ResNet-18 DeepLab-v2 with
random weights (a saved checkpoint, as MODEL.WEIGHTS), INPUT.TEST_SIZE 1024×512, one loader process.
Each N runs in a fresh process; the model is built first, then the peak resident memory of
`stage.run()` above that point is measured (`benchmarks/common.py: PeakMemory`). The released code
keeps every softmax map of the set in memory (≈19 GB for the 2,975 Cityscapes images); spcl streams
per-class histograms, so the peak should not grow with N.

    python benchmarks/gen_pseudo_memory.py [--quick] [--sizes 5 10 20] [--threads 2]   (~5.5 min here at 2 threads: ~8 s per image)
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

FULL = {"sizes": [5, 10, 20], "W": 2048, "H": 1024, "test_size": [1024, 512]}
QUICK = {"sizes": [2, 4, 8], "W": 512, "H": 256, "test_size": [256, 128]}


def make_data(root: str, n: int, W: int, H: int) -> None:
    from PIL import Image

    d = os.path.join(root, "cityscapes", "leftImg8bit", "train", "city")
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        image = np.empty((H, W, 3), np.uint8)
        image[: H // 2] = (70 + i % 50, 130, 180)
        image[H // 2:] = (128, 64, 128 - i % 50)
        image[H // 2: H // 2 + H // 8, (i * 37) % (W // 2): (i * 37) % (W // 2) + W // 4] = (0, 0, 142)
        Image.fromarray(image).save(os.path.join(d, f"city_{i:06d}_000019_leftImg8bit.png"), compress_level=1)


def _cfg(task: dict, out: str):
    from spcl.config import load_config

    return load_config("", [
        "MODEL.BACKBONE", "resnet18", "MODEL.NUM_CLASSES", "19", "MODEL.WEIGHTS", task["ckpt"],
        "DATASETS.DATA_DIR", task["root"], "DATASETS.TARGET_LIST", task["list"], "DATASETS.PREFLIGHT", "False",
        "INPUT.TEST_SIZE", str(task["test_size"]), "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", out])


def task_run(task: dict) -> dict:
    from spcl.engine.stages import PseudoLabelsStage

    out = tempfile.mkdtemp(prefix="spcl_pl_", dir=task["root"])
    stage = PseudoLabelsStage(_cfg(task, out), os.path.join(out, "pseudo"))
    t = time.perf_counter()
    with PeakMemory() as m:
        result = stage.run()
    seconds = time.perf_counter() - t
    labels = os.listdir(result["outputs"]["pseudo_dir"])
    return {"n": task["n"], "peak_mb": m.peak_mb, "retained_mb": m.end_rss_mb, "method": m.method,
            "seconds": seconds, "s_per_image": seconds / task["n"], "label_files": len(labels)}


HANDLERS = {"run": task_run}


def main():
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of target images")
    args = parser.parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.sizes:
        size["sizes"] = sorted(args.sizes)
    script, thr = os.path.abspath(__file__), args.threads
    root = tempfile.mkdtemp(prefix="spcl_genpseudo_bench_")
    try:
        import torch

        from spcl.config import load_config
        from spcl.modeling import build_segmentor

        t = time.perf_counter()
        make_data(root, max(size["sizes"]), size["W"], size["H"])
        gen_s = time.perf_counter() - t
        torch.manual_seed(0)
        model = build_segmentor(load_config("", ["MODEL.BACKBONE", "resnet18"]), load_weights=False)
        ckpt = os.path.join(root, "model.pth")
        torch.save({"model": model.state_dict(), "iteration": 0}, ckpt)
        runs = []
        for n in size["sizes"]:
            names = sorted(os.listdir(os.path.join(root, "cityscapes", "leftImg8bit", "train", "city")))[:n]
            lst = os.path.join(root, f"list_{n}.txt")
            with open(lst, "w") as f:
                f.writelines(f"city/{x}\n" for x in names)
            runs.append(run_worker(script, {"kind": "run", "root": root, "n": n, "ckpt": ckpt, "list": lst,
                                            "test_size": size["test_size"]}, thr))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peaks = [r["peak_mb"] for r in runs]
    softmax_mb = 19 * size["W"] * size["H"] * 4 / 2**20  # one image's float32 softmax at label size
    res = {"machine": common.machine_info(thr), "size": size, "generate_s": gen_s, "runs": runs,
           "one_softmax_map_mb": softmax_mb, "peak_spread_mb": max(peaks) - min(peaks),
           "peak_growth_per_100_images_mb": (peaks[-1] - peaks[0]) / (size["sizes"][-1] - size["sizes"][0]) * 100}
    print(f"pseudo-label stage memory: N Cityscapes train images {size['W']}×{size['H']}, ResNet-18 at "
          f"{size['test_size'][0]}×{size['test_size'][1]}, fresh process per N, {thr} thread(s); "
          f"one 19-class float32 softmax map at image size = {softmax_mb:.0f} MB")
    print(format_table(["N images", "files in labels/", "peak RSS growth (MB)", "retained (MB)", "seconds", "s/image"],
                       [[r["n"], r["label_files"], r["peak_mb"], r["retained_mb"], r["seconds"], r["s_per_image"]]
                        for r in runs]))
    print(f"peak spread over N: {res['peak_spread_mb']:.1f} MB "
          f"({res['peak_growth_per_100_images_mb']:+.1f} MB per 100 images)")
    print("written", common.write_results("gen_pseudo_memory", res, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
