"""Infinite, seeded, rank-sharded training samplers, and the class-balanced source sampler of the released code (docs/method.md "Datasets").

Both yield `(index, sample_seed)` pairs. The stream of a run is fixed by its seed: rank r of w
processes takes positions r, r + w, r + 2w, … of one global stream, and `start` skips the items a
resumed run has already consumed, so a resumed run sees exactly the samples (and augmentations) of
an uninterrupted one. Used by spcl.data.build.build_train_loader.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..utils.io import where_read


def sample_seed(seed: int, position: int) -> int:
    """Augmentation seed of the sample at global stream `position`."""
    return (seed * 1_000_003 + position * 7_919) % (2**31 - 1)


class _ShardedStream(Sampler):
    def __init__(self, seed: int, rank: int, world_size: int, start: int):
        self.seed, self.rank, self.world_size, self.start = int(seed), rank, world_size, start

    def global_stream(self) -> Iterator[int]:
        raise NotImplementedError

    def __iter__(self):
        stream = enumerate(self.global_stream())
        first = self.start * self.world_size + self.rank
        for pos, idx in itertools.islice(stream, first, None, self.world_size):
            yield int(idx), sample_seed(self.seed, pos)


class InfiniteSampler(_ShardedStream):
    """Endless epochs of `size` indices, each a fresh seeded permutation (or in order).

    Args:
        size: dataset length.
        seed: stream seed (the config's SEED).
        shuffle: permute each epoch.
        rank, world_size: this process's shard.
        start: items of this rank's shard already consumed (iteration × local batch).
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("InfiniteSampler needs a non-empty dataset")
        super().__init__(seed, rank, world_size, start)
        self.size, self.shuffle = size, shuffle

    def global_stream(self):
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            yield from order.tolist()


class ClassBalancedSampler(_ShardedStream):
    """Released SPCL source sampling: draw a class, then the next file containing it.

    A class k is drawn with probability ∝ 1 / ln(1.01 + h_k / Σh); then the next file of its own
    seeded shuffle of the files containing it. h counts, over the current block of `block` draws
    (zero at its start), the classes *present in the drawn files*: each draw adds 1 to every class
    of the drawn file, not only to the drawn class (released `core/datasets/gta5.py`:
    `cur_class_dist[file_to_label[c_file]] += 1`). Classes no file contains are never drawn.

    Args:
        file_classes: for each dataset index, the train labels present in its label file.
        num_classes: K.
        seed, rank, world_size, start: as InfiniteSampler.
        block: draws per block (released code: 3,000).
    """

    def __init__(self, file_classes: Sequence[Sequence[int]], num_classes: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, start: int = 0, block: int = 3000):
        super().__init__(seed, rank, world_size, start)
        self.num_classes, self.block = num_classes, block
        self.class_files = [[] for _ in range(num_classes)]
        self.file_classes = []  # per dataset index: its valid classes, without duplicates
        for i, classes in enumerate(file_classes):
            valid = sorted({int(k) for k in classes if 0 <= k < num_classes})
            self.file_classes.append(np.array(valid, dtype=np.int64))
            for k in valid:
                self.class_files[k].append(i)
        self.present = np.array([len(f) > 0 for f in self.class_files])
        if not self.present.any():
            raise ValueError("class-balanced sampler: no file contains any class")

    def class_probabilities(self, counts: np.ndarray) -> np.ndarray:
        """Draw probabilities given the class counts `counts` (K,) of the current block."""
        total = counts.sum()
        freq = counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)
        w = 1.0 / np.log(1.01 + freq)
        w[~self.present] = 0.0
        return w / w.sum()

    def count_draw(self, counts: np.ndarray, index: int) -> None:
        """Add the drawn file `index` to the block's class counts: +1 for every class it contains."""
        counts[self.file_classes[index]] += 1

    def global_stream(self):
        rng = np.random.default_rng(self.seed)
        orders = [list(rng.permutation(f)) if f else [] for f in self.class_files]
        pointers = [0] * self.num_classes
        counts = np.zeros(self.num_classes, dtype=np.float64)
        drawn = 0
        while True:
            if drawn % self.block == 0:
                counts[:] = 0
            k = int(rng.choice(self.num_classes, p=self.class_probabilities(counts)))
            drawn += 1
            if pointers[k] >= len(orders[k]):
                orders[k] = list(rng.permutation(self.class_files[k]))
                pointers[k] = 0
            index = int(orders[k][pointers[k]])
            pointers[k] += 1
            self.count_draw(counts, index)
            yield index


def load_class_index(path: str, image_names: Sequence[str],
                     num_classes: Optional[int] = None) -> list[list[int]]:
    """Per-image class lists, in dataset order, from a class-index JSON.

    Accepts `{"files": {name: [labels]}}` (tools/prepare_data.py) or a plain `{name: [labels]}`
    map (the released code's label info), either optionally gzip-compressed (`*.gz`). Names are
    matched on the image path relative to the image folder, then on its base name. With `num_classes`
    (MODEL.NUM_CLASSES), an index built for another class setting is refused: its train labels would
    name other classes (a 19-class index read with 16 classes balances the wrong ones).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class index not found: {path}{where_read(path)} "
                                "(build it with tools/prepare_data.py, "
                                "or set DATASETS.CLASS_BALANCE False)")
    opener = gzip.open if path.endswith(".gz") else open  # the released label info, re-encoded, is .json.gz
    try:
        with opener(path, "rt") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"class index {path}: not a readable JSON file ({e})") from e
    files = data.get("files", data) if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"class index {path}: expected a JSON mapping of file name to class list")
    out = []
    for name in image_names:
        classes = files.get(name, files.get(os.path.basename(name)))
        if classes is None:
            raise KeyError(f"class index {path} has no entry for image '{name}'; rebuild it with "
                           "tools/prepare_data.py")
        out.append([int(c) for c in classes])
    built = data.get("num_classes") if "files" in data else None
    top = max((c for cs in out for c in cs), default=-1)
    if num_classes is not None and (built not in (None, num_classes) or top >= num_classes):
        what = f"was built for {built} classes" if built not in (None, num_classes) else f"holds train label {top}"
        raise ValueError(f"class index {path} {what}, and this run has MODEL.NUM_CLASSES {num_classes}: delete "
                         f"it (it is rebuilt on first use), or set DATASETS.CLASS_INDEX to an index of "
                         f"{num_classes} classes (tools/prepare_data.py)")
    return out
