"""Logging set-up: the `spcl` logger to the console (main process) and to a file per output folder.

Library code only calls `logging.getLogger("spcl")`; tools call `setup_logger` once.

A pipeline run has two kinds of log file: the *run log* `OUTPUT_DIR/log.txt` (set with
`run_log=True`), which receives every message of the run (the stage banners, every stage's own
lines and the final summary), and one log per stage folder (`OUTPUT_DIR/<i>_<stage>/log.txt`),
which receives that stage's lines only. Log files are opened on their first message, so a tool
that logs nothing (or switches to another file first) leaves no empty `log.txt` behind.
"""
from __future__ import annotations

import logging
import os
import sys

from .comm import get_rank
from .io import inside

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


class _LazyFileHandler(logging.FileHandler):
    """A FileHandler (append) that creates its folder and file on the first message only.

    A file that cannot be written (a full disk, a folder made read-only) is given up at its first failed
    message, with one warning on stderr: a log file is a copy of what the console shows, so it is not worth a
    "--- Logging error ---" traceback on every line, nor a stopped run (`unwritable` is then True).
    """

    def __init__(self, path: str, run_log: bool = False):
        super().__init__(path, mode="a", delay=True)
        self.run_log = run_log
        self.run_root = os.path.dirname(os.path.abspath(path))
        self.unwritable = False

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return super()._open()

    def emit(self, record):
        if self.unwritable:
            return
        try:
            super().emit(record)
        except OSError:  # opening the file, which FileHandler.emit does outside its own try
            self.handleError(record)

    def handleError(self, record):
        """Called inside `except`: an OSError gives the file up (see the class doc); any other error is a bug,
        reported as logging does."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self.unwritable = True
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError:  # the buffered lines it cannot write either: dropped, the descriptor is closed
                pass
        reason = error.strerror or str(error)
        warning = logging.makeLogRecord({
            "name": record.name, "levelno": logging.WARNING, "levelname": "WARNING",
            "msg": f"cannot write log file {self.baseFilename}: {reason}; its lines go to the console only "
                   "from here on"})
        stderr = _ConsoleHandler(sys.stderr)
        stderr.setFormatter(self.formatter)
        stderr.handle(warning)


class _ConsoleHandler(logging.StreamHandler):
    """The console: a message logged while a progress bar runs is written above the bar (`tqdm.write`
    clears the bar, writes, draws the bar again) instead of into the middle of the bar's line."""

    def emit(self, record):
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's rule: a handler that fails reports it and never raises
            self.handleError(record)


def setup_logger(output_dir: str = "", name: str = "spcl", filename: str = "log.txt",
                 run_log: bool = False) -> logging.Logger:
    """Configure `name`: INFO to stdout on rank 0, and to `output_dir/filename` (rank 0, appended).

    Calling it again with another folder replaces the file handler (one log per stage folder).
    With `run_log=True` the file is the run's log: it replaces every file handler, and later calls
    for folders inside `output_dir` (the stage folders) add their file beside it instead of
    replacing it; a call for a folder outside `output_dir` (or with no folder) ends it.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    rank = get_rank()
    for h in list(logger.handlers):
        keep = (rank == 0 and not run_log and output_dir and getattr(h, "run_log", False)
                and inside(output_dir, h.run_root))
        if (isinstance(h, logging.FileHandler) and not keep) or rank != 0:
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    if rank == 0 and not any(getattr(h, "_spcl_console", False) for h in logger.handlers):
        ch = _ConsoleHandler(sys.stdout)
        ch.setFormatter(fmt)
        ch._spcl_console = True  # type: ignore[attr-defined]
        logger.addHandler(ch)
    if output_dir and rank == 0:
        path = os.path.abspath(os.path.join(output_dir, filename))
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
            fh = _LazyFileHandler(path, run_log=run_log)
            fh.setFormatter(fmt)
            logger.addHandler(fh)
    return logger
