"""Reading images and label files with errors that name the file.

Label decoding keeps what each format really stores: GTA5 palette PNGs are decoded as palette
*indices* (the labelIds), never as colours; SYNTHIA's 16-bit 3-channel PNGs are decoded with all
16 bits (Pillow would truncate them to 8 bits) and the class id taken from the first channel.
Called by the dataset classes and by tools/prepare_data.py.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..utils.io import space_hint


def _open(path: str) -> Image.Image:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise IOError(f"cannot read image file {path}: {e}") from e
    return img


def read_image(path: str) -> Image.Image:
    """An RGB PIL image; raises naming `path` when it is missing or unreadable."""
    return _open(path).convert("RGB")


def read_label_indices(path: str) -> np.ndarray:
    """An 8-bit single-channel label (mode L or P) as H×W uint8 of stored values.

    A palette (P) image yields its indices, which for GTA5 are the Cityscapes labelIds.
    """
    img = _open(path)
    if img.mode not in ("L", "P", "I;16", "I"):
        raise ValueError(f"label file {path} has mode {img.mode}; expected a single-channel "
                         "(L or palette P) PNG of label ids")
    arr = np.array(img)
    if arr.ndim != 2:
        raise ValueError(f"label file {path} is not single-channel (shape {arr.shape})")
    return arr


def read_png16_first_channel(path: str) -> np.ndarray:
    """First channel of a (possibly 16-bit, multi-channel) PNG as H×W int32, all bits kept."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file: {path}")
    import warnings

    from torchvision.io import ImageReadMode, decode_png

    try:
        with open(path, "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders; still exact here
            warnings.simplefilter("ignore", DeprecationWarning)
            t = decode_png(data, mode=ImageReadMode.UNCHANGED)  # C×H×W, uint8 or uint16
    except (RuntimeError, ValueError) as e:
        raise IOError(f"cannot read 16-bit PNG label file {path}: {e}") from e
    return t[0].to(torch.int32).numpy()

def write_label_png(path: str, label: np.ndarray) -> None:
    """Write an H×W uint8 label map as an 8-bit (mode L) PNG, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        Image.fromarray(np.asarray(label, dtype=np.uint8), mode="L").save(path)
    except OSError as e:
        if os.path.isfile(path):  # a partial label file would be read back as a wrong label
            os.remove(path)
        raise OSError(e.errno, f"cannot write label file {path}: {e.strerror or e}{space_hint(e.errno)}") from e
