"""Benchmark: decoded + augmented training images per second per loader worker at the paper's sizes,
spcl's pipeline against a re-implementation of the released one, in the same run.

Data: N generated GTA5 frames 1914×1052 (PNG RGB + palette labelIds) and N Cityscapes frames
2048×1024 (PNG RGB, unlabelled as in warm-up), with smooth structure plus pixel noise so the PNGs
compress like photographs (≈2-3 bytes/pixel rather than the few hundred bytes of a flat image).

Pipelines (one item = what one loader worker does for one sample; timed in this process, which is
what one worker does, median over the items after a warm-up item):
* **spcl**: `build_dataset(cfg, 'gta5_train' | 'cityscapes_train', train=True)` `__getitem__` with
  the transforms of configs/gta5_r101.yaml (source: resize 1280×720 + colour jitter + label
  nearest; target: resize 1024×512), each sample with its stream seed.
* **released**: BinhuiXie/SPCL `core/datasets/gta5.py` / `cityscapes.py` + `transform.py` as
  `build_transform` assembles them: PIL decode, labelIds → trainIds with a float32 loop over the 19
  ids and `Image.fromarray` of the float map, source `ColorJitter(0.5, 0.5, 0.5, 0.2)` of torchvision
  on the full-size PIL image, `Resize((h, w))` bicubic (label nearest), `to_tensor` of image and
  label, `Normalize`; target: bicubic resize, `to_tensor`, `Normalize`.

Reported: ms per item and items/s per worker for source, target and the 1 : 1 mix of a 4 + 4 step;
the ratio spcl / released; and the workers per GPU needed to feed TARGET_RATE images/s (a 4 + 4
align step of the ResNet-101 in 0.196 s on an H200 with bf16 + channels-last, benchmarks/gpu_step.py:
~41 images/s per GPU). Worker throughput scales with cores (one
core per worker); the estimate assumes that many free cores per GPU.

    python benchmarks/data_loading.py [--quick] [--n 16] [--reps 1]
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import format_table, median  # noqa: E402

import numpy as np  # noqa: E402

FULL = {"n": 16, "src": (1914, 1052), "tgt": (2048, 1024), "src_size": (1280, 720), "tgt_size": (1024, 512)}
QUICK = {"n": 3, "src": (480, 263), "tgt": (512, 256), "src_size": (320, 180), "tgt_size": (256, 128)}
TARGET_RATE = 8 / 0.196  # images/s of a 4 + 4 align step, measured on an H200 (results/gpu_step.json)
JITTER = (0.5, 0.5, 0.5, 0.2)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


# ------------------------------------------------------------------------------------------ data
def _frame(W: int, H: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth gradients and blocks plus ±6 noise: PNG size close to a rendered/photographed frame."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.empty((H, W, 3), np.float32)
    img[..., 0] = 128 + 90 * np.sin(x / (37 + i) + y / 91)
    img[..., 1] = 128 + 90 * np.cos(y / (53 + i) - x / 150)
    img[..., 2] = 128 + 60 * np.sin((x + y) / (71 + 2 * i))
    img[H // 2:, :, :] *= 0.6
    img += rng.integers(-6, 7, size=(H, W, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_data(root: str, n: int, src: tuple, tgt: tuple) -> dict:
    from PIL import Image

    from spcl.data.labels import cityscapes_labelid_palette

    rng = np.random.default_rng(0)
    gi, gl = os.path.join(root, "gta5", "images"), os.path.join(root, "gta5", "labels")
    ci = os.path.join(root, "cityscapes", "leftImg8bit", "train", "city")
    for d in (gi, gl, ci):
        os.makedirs(d, exist_ok=True)
    pal = cityscapes_labelid_palette()
    ids = np.array(sorted(ID_TO_TRAINID) + [0, 1, 4], np.uint8)
    sizes = {"source": 0, "target": 0}
    for i in range(n):
        W, H = src
        Image.fromarray(_frame(W, H, i, rng)).save(os.path.join(gi, f"{i:05d}.png"), compress_level=6)
        blocks = ids[rng.integers(0, len(ids), size=(H // 32 + 1, W // 32 + 1))]
        label = np.kron(blocks, np.ones((32, 32), np.uint8))[:H, :W]
        lab = Image.fromarray(np.ascontiguousarray(label), "P")
        lab.putpalette(pal)
        lab.save(os.path.join(gl, f"{i:05d}.png"))
        W, H = tgt
        path = os.path.join(ci, f"city_{i:06d}_000019_leftImg8bit.png")
        Image.fromarray(_frame(W, H, i + 100, rng)).save(path, compress_level=6)
        sizes["source"] += os.path.getsize(os.path.join(gi, f"{i:05d}.png"))
        sizes["target"] += os.path.getsize(path)
    return {k: v / n / 2**20 for k, v in sizes.items()}


# ------------------------------------------------------------------------------------ pipelines
def spcl_datasets(root: str, size: dict):
    from spcl.config import load_config
    from spcl.data import build_dataset

    cfg = load_config(os.path.join(common.REPO_ROOT, "configs", "gta5_r101.yaml"), [
        "DATASETS.DATA_DIR", root, "DATASETS.CLASS_BALANCE", "False", "MODEL.WEIGHTS", "",
        "INPUT.SOURCE_SIZE", str(list(size["src_size"])), "INPUT.TARGET_SIZE", str(list(size["tgt_size"]))])
    return {"source": build_dataset(cfg, "gta5_train", train=True),
            "target": build_dataset(cfg, "cityscapes_train", train=True)}


class Released:
    """The released data path (see the module docstring), one dataset per domain."""

    def __init__(self, root: str, domain: str, out_size: tuple):
        import torchvision
        from torchvision.transforms import functional as F

        self.F = F
        self.domain = domain
        self.w, self.h = out_size
        if domain == "source":
            d = os.path.join(root, "gta5")
            names = sorted(os.listdir(os.path.join(d, "images")))
            self.items = [(os.path.join(d, "images", n), os.path.join(d, "labels", n)) for n in names]
            self.jitter = torchvision.transforms.ColorJitter(*JITTER)
        else:
            d = os.path.join(root, "cityscapes", "leftImg8bit", "train", "city")
            self.items = [(os.path.join(d, n), None) for n in sorted(os.listdir(d))]
            self.jitter = None

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from PIL import Image

        F = self.F
        img_path, label_path = self.items[index]
        image = Image.open(img_path).convert("RGB")
        if label_path is not None:  # core/datasets/gta5.py
            label = np.array(Image.open(label_path), dtype=np.float32)
            label_copy = 255 * np.ones(label.shape, dtype=np.float32)
            for k, v in ID_TO_TRAINID.items():
                label_copy[label == k] = v
            label = Image.fromarray(label_copy)
        else:  # unlabelled target: a placeholder label map of the image's size
            label = Image.fromarray(np.full((image.size[1], image.size[0]), 255, np.float32))
        if self.jitter is not None:  # transform.ColorJitter comes first in build_transform
            image = self.jitter(image)
        image = F.resize(image, (self.h, self.w), Image.BICUBIC)  # transform.Resize
        label = F.resize(label, (self.h, self.w), Image.NEAREST)
        image, label = F.to_tensor(image), F.to_tensor(label).squeeze()  # transform.ToTensor
        image = F.normalize(image, mean=MEAN, std=STD)  # transform.Normalize (to_bgr255 False)
        return image, label


def time_items(get, n: int, reps: int) -> list[float]:
    get(0)  # warm-up: imports, lookup tables, codec set-up
    out = []
    for _ in range(reps):
        for i in range(n):
            t = time.perf_counter()
            get(i)
            out.append(time.perf_counter() - t)
    return out


def main():
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="generated images per domain")
    args = parser.parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.n:
        size["n"] = args.n
    reps = args.reps or 1
    common.set_threads(args.threads)
    root = tempfile.mkdtemp(prefix="spcl_loading_bench_")
    try:
        t = time.perf_counter()
        file_mb = make_data(root, size["n"], size["src"], size["tgt"])
        gen_s = time.perf_counter() - t
        ours = spcl_datasets(root, size)
        theirs = {d: Released(root, d, size["src_size"] if d == "source" else size["tgt_size"])
                  for d in ("source", "target")}
        samples, rows = {}, []
        from spcl.data.samplers import sample_seed
        for dom in ("source", "target"):
            ds = ours[dom]
            assert len(ds) == size["n"] and len(theirs[dom]) == size["n"]
            # interleave the two pipelines' passes so machine noise hits both alike
            samples[("released", dom)] = time_items(lambda i: theirs[dom][i], size["n"], reps)
            samples[("spcl", dom)] = time_items(lambda i: ds[(i, sample_seed(1, i))], size["n"], reps)
            samples[("released", dom)] += time_items(lambda i: theirs[dom][i], size["n"], reps)
            samples[("spcl", dom)] += time_items(lambda i: ds[(i, sample_seed(2, i))], size["n"], reps)
        ms = {k: median(v) * 1000 for k, v in samples.items()}
        res = {"machine": common.machine_info(args.threads), "size": size, "generate_s": gen_s,
               "png_mb_per_file": file_mb, "samples_s": {f"{p}/{d}": v for (p, d), v in samples.items()},
               "ms_per_item": {f"{p}/{d}": v for (p, d), v in ms.items()}, "target_images_per_s": TARGET_RATE}
        for p in ("released", "spcl"):
            mix = (ms[(p, "source")] + ms[(p, "target")]) / 2  # a 4 + 4 step: half source, half target
            rate = 1000 / mix
            workers = math.ceil(TARGET_RATE / rate)
            res[p] = {"source_per_s": 1000 / ms[(p, "source")], "target_per_s": 1000 / ms[(p, "target")],
                      "mix_ms": mix, "mix_per_s": rate, "workers_per_gpu": workers}
            rows.append([p, ms[(p, "source")], ms[(p, "target")], mix, rate, workers])
        ratio = {d: ms[("released", d)] / ms[("spcl", d)] for d in ("source", "target")}
        ratio["mix"] = res["released"]["mix_ms"] / res["spcl"]["mix_ms"]
        res["speedup_spcl_over_released"] = ratio
        res["target_speedup"] = 1.5
        print(f"data loading per worker: {size['n']} source {size['src'][0]}×{size['src'][1]} → "
              f"{size['src_size'][0]}×{size['src_size'][1]} + jitter, {size['n']} target {size['tgt'][0]}×"
              f"{size['tgt'][1]} → {size['tgt_size'][0]}×{size['tgt_size'][1]}; PNGs {file_mb['source']:.1f} / "
              f"{file_mb['target']:.1f} MB; {args.threads} thread(s); median ms per item of {2 * reps} passes")
        print(format_table(["pipeline", "source ms", "target ms", "4+4 mix ms/img", "img/s per worker",
                            f"workers/GPU for {TARGET_RATE:.0f} img/s"], rows))
        print("spcl speed-up over released: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
        print("written", common.write_results("data_loading", res, args.quick))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
