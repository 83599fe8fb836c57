"""Reading images and label files with errors that name the file.

Label decoding keeps what each format really stores: GTA5 palette PNGs are decoded as palette
*indices* (the labelIds), never as colours; SYNTHIA's 16-bit 3-channel PNGs are decoded with all
16 bits (Pillow would truncate them to 8 bits) and the class id taken from the first channel.
Called by the dataset classes and by tools/prepare_data.py. `files_below` is the one recursive
folder search of the datasets and tools/infer.py: it follows symlinked folders, each real folder once.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..utils.io import space_hint


ORIENTATION = 0x0112  # the EXIF tag


def refuse_a_folder(path: str, what: str) -> None:
    """Raise IsADirectoryError when the `what` file (image, label) at `path` is a folder."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} file {path} is a folder, not a file: put the {what} file back in its place")


def _open(path: str, what: str = "image") -> Image.Image:
    """The decoded image file at `path`; errors name it as the `what` file (image, label) it is read as."""
    refuse_a_folder(path, what)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing {what} file: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise IOError(f"cannot read {what} file {path}: {e}") from e
    return img


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1–8; 1 = as stored) of an opened image, from the EXIF block its header holds
    (JPEG APP1, PNG eXIf before the pixels). Decodes no pixels: Pillow's `getexif()` on a PNG decodes the
    whole image. A damaged block counts as 1, as viewers treat it."""
    raw = img.info.get("exif")
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        orientation = exif.get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - any malformed EXIF: shown as stored
        return 1
    return orientation if orientation in range(1, 9) else 1


def displayed_size(img: Image.Image) -> tuple:
    """(W, H) of an opened image as `to_rgb` returns it: its header's size, swapped when its EXIF
    orientation turns it by 90° (orientations 5–8). Reads no pixels."""
    w, h = img.size
    return (h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h)


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as an 8-bit RGB image, as a viewer shows it: turned by its EXIF orientation (a phone's
    portrait JPEG), 16-bit greyscale scaled to 8 bits (Pillow's own conversion clips it to white),
    palette, CMYK, greyscale and alpha images converted."""
    if exif_orientation(img) != 1:  # (exif_transpose copies every image, turned or not)
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):  # 16-bit greyscale PNG ("I;16", or "I" in older Pillow): 0..65535
        arr = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def read_image(path: str) -> Image.Image:
    """An RGB PIL image (see `to_rgb`); raises naming `path` when it is missing or unreadable."""
    return to_rgb(_open(path))


def read_label_indices(path: str) -> np.ndarray:
    """An 8-bit single-channel label (mode L or P) as H×W uint8 of stored values.

    A palette (P) image yields its indices, which for GTA5 are the Cityscapes labelIds.
    """
    img = _open(path, "label")
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
        raise FileNotFoundError(f"missing label file: {path}")
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


def files_below(folder: str, folders: Optional[list] = None) -> list[str]:
    """Paths relative to `folder` of every file below it, depth first with names sorted (a folder's files,
    then each sub-folder's). Symlinked sub-folders are searched too (a dataset split or a city is
    often a link to another disk), and each real folder once: a link cycle (`a/loop -> a`) ends, and a
    folder reached twice (a link to a folder also below `folder`) is listed where the walk meets it
    first, so no image is listed twice. `folders`, when given, receives the relative path of every
    sub-folder met (so that a folder named like an image can be told apart from an image)."""
    out, seen = [], {os.path.realpath(folder)}
    for dirpath, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        if folders is not None:
            folders.extend(os.path.relpath(os.path.join(dirpath, d), folder) for d in dirs)
        for d in list(dirs):  # (top-down: what is taken out of `dirs` here is not entered)
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen:
                dirs.remove(d)
            seen.add(real)
        out.extend(os.path.relpath(os.path.join(dirpath, f), folder) for f in sorted(files))
    return out


def refuse_folders_named_like_images(folder: str, folders: list, is_image_name: Callable[[str], bool]) -> None:
    """Raise IsADirectoryError when a sub-folder of `folder` (`folders`: relative paths, as `files_below`
    collects them) has a name `is_image_name` accepts: an image replaced by a folder of its name would
    otherwise leave the dataset one item short without a word."""
    bad = sorted(f for f in folders if is_image_name(os.path.basename(f)))
    if bad:
        raise IsADirectoryError(
            f"{len(bad)} folder(s) under {folder} are named like its images, e.g. {os.path.join(folder, bad[0])}: "
            f"a folder is not an image, and the dataset would be {len(bad)} item(s) short. Put the image file "
            f"back in its place, or move the folder out of {folder}")


def write_label_png(path: str, label: np.ndarray) -> None:
    """Write an H×W uint8 label map as an 8-bit (mode L) PNG, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        Image.fromarray(np.asarray(label, dtype=np.uint8), mode="L").save(path)
    except OSError as e:
        if os.path.isfile(path):  # a partial label file would be read back as a wrong label
            os.remove(path)
        raise OSError(e.errno, f"cannot write label file {path}: {e.strerror or e}{space_hint(e.errno)}") from e
