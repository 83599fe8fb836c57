"""The one progress-bar helper: a tqdm bar on the main process of long loops (stages and tools),
the plain iterable elsewhere (other ranks, or when disabled)."""
from __future__ import annotations

from typing import Iterable, TypeVar

from . import comm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, enabled: bool = True, **kwargs) -> Iterable[T]:
    """`iterable` wrapped in a tqdm bar named `desc` on the main process when `enabled`."""
    if not enabled or not comm.is_main_process():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, **kwargs)
