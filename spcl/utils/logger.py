"""Logging set-up: the `spcl` logger to the console (main process) and to a file per output folder.

Library code only calls `logging.getLogger("spcl")`; tools call `setup_logger` once.
"""
from __future__ import annotations

import logging
import os
import sys

from .comm import get_rank

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logger(output_dir: str = "", name: str = "spcl", filename: str = "log.txt") -> logging.Logger:
    """Configure `name`: INFO to stdout on rank 0, and to `output_dir/filename` (rank 0, appended).

    Calling it again with another folder replaces the file handler (one log per stage folder).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    rank = get_rank()
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler) or rank != 0:
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    if rank == 0 and not any(getattr(h, "_spcl_console", False) for h in logger.handlers):
        ch = logging.StreamHandler(sys.stdout)
        ch.setFormatter(fmt)
        ch._spcl_console = True  # type: ignore[attr-defined]
        logger.addHandler(ch)
    if output_dir and rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, filename))
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
