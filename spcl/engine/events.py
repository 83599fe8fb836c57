"""Training events: a `metrics.json` file of JSON lines and TensorBoard scalars (main process only).

A list of numbers becomes one TensorBoard scalar per entry. Per-class lists are tagged with class
names (`val/IoU/sign`, `pseudo_labels/thresholds/sign`): the names given to the writer when the list
has that many entries, else the Cityscapes names of a 19- or 16-entry list (spcl.data.labels), else
the index (`…/07`), also where two names would be one tag. `metrics.json` keeps the lists as they are
(label order).

TensorBoard is a view of `metrics.json`: when its folder cannot be written (a full disk, a folder made
read-only) it is turned off for the rest of the stage with one warning, and training goes on. Any error of
its writer counts, not only OSError: with TensorFlow installed, TensorBoard writes through TensorFlow's
gfile, whose errors (tf.errors.OpError) are not OSErrors.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Optional, Sequence

from spcl.utils.io import atomic_write, json_safe

logger = logging.getLogger("spcl")


def scalar_tags(key: str, values: Sequence, class_names: Optional[Sequence[str]] = None) -> list[str]:
    """The TensorBoard tag suffix of each entry of a list logged under `key`: `key/<class name>` for a
    per-class list (see the module doc), `key/<index>` otherwise."""
    names: Optional[Sequence[str]] = None
    if class_names is not None and len(class_names) == len(values):
        names = class_names
    elif len(values) in (16, 19):
        from spcl.data.labels import class_names as cityscapes_names

        names = cityscapes_names(len(values))
    if names is not None:
        tags = [_tag_safe(n) for n in names]
        if len(set(tags)) == len(tags):  # distinct once cleaned: 'a b' and 'a/b' would be one tag
            return [f"{key}/{t}" for t in tags]
    return [f"{key}/{i:02d}" for i in range(len(values))]


def _tag_safe(name: str) -> str:
    """A class name as one TensorBoard tag component (no '/', no spaces)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name)) or "_"


class EventWriter:
    """Appends `{"iteration": it, "stage": …, **scalars}` lines to `metrics.json` and TensorBoard.

    Args:
        folder: where `metrics.json` and `tb/` go.
        stage: first component of every TensorBoard tag.
        enabled: False on processes other than the main one (writes nothing).
        tensorboard: also write TensorBoard events.
        class_names: names of the per-class entries of list scalars (default: Cityscapes names for
            lists of 19 or 16 entries).
        resumed_at: the iteration a resumed stage continues from (-1: a stage that starts afresh over an
            earlier attempt). What was logged after it (the iterations between the checkpoint and the
            interruption, which the resume runs again) is dropped from `metrics.json` and hidden in
            TensorBoard (`purge_step`), so that each iteration has one record.
        redo_eval: the evaluation of iteration `resumed_at` runs again (a stage resumed from its final
            checkpoint): its `val/` record there is dropped from `metrics.json` too. TensorBoard, whose purge
            would also hide that step's training scalars, keeps the earlier attempt's (the same values) and
            does not get them twice.
    """

    def __init__(self, folder: str, stage: str, enabled: bool = True, tensorboard: bool = True,
                 class_names: Optional[Sequence[str]] = None, resumed_at: Optional[int] = None,
                 redo_eval: bool = False):
        self.folder, self.stage, self.enabled = folder, stage, enabled
        self.class_names = list(class_names) if class_names is not None else None
        self.tb = None
        self._tb_has_val_at = None
        if enabled:
            os.makedirs(folder, exist_ok=True)
            if resumed_at is not None and self._drop_after(resumed_at, redo_eval):
                self._tb_has_val_at = resumed_at  # the earlier attempt logged that evaluation: TensorBoard has it
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # pragma: no cover - tensorboard is a dependency
                    SummaryWriter = None
                if SummaryWriter is not None:
                    _quiet_tensorboard_thread_errors()
                    purge = {} if resumed_at is None else {"purge_step": resumed_at + 1}
                    try:
                        self.tb = SummaryWriter(os.path.join(folder, "tb"), **purge)
                    except Exception as e:  # noqa: BLE001 - any writer error (module doc)
                        self._tensorboard_off(e)

    def _drop_after(self, iteration: int, redo_eval: bool = False) -> bool:
        """Drop the records after `iteration` (and with `redo_eval` its `val/` record); returns whether that
        `val/` record was there (an evaluation the earlier attempt finished and logged)."""
        path = os.path.join(self.folder, "metrics.json")
        if not os.path.isfile(path):
            return False
        with open(path) as f:
            lines = [ln for ln in f if ln.strip()]
        redone = [ln for ln in lines if redo_eval and _iteration_of(ln) == iteration and '"val/' in ln]
        kept = [ln for ln in lines if _iteration_of(ln) <= iteration and ln not in redone]
        if len(kept) < len(lines):
            atomic_write(path, lambda f: f.writelines(kept), binary=False, what="metrics file")
        return bool(redone)

    def write(self, iteration: int, scalars: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, "stage": self.stage}
        record.update({prefix + k: v for k, v in scalars.items()})
        with open(os.path.join(self.folder, "metrics.json"), "a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")  # standard JSON: NaN as null
        if self.tb is not None and not (prefix == "val/" and iteration == self._tb_has_val_at):
            try:
                for k, v in scalars.items():
                    if isinstance(v, (int, float)):
                        self.tb.add_scalar(f"{self.stage}/{prefix}{k}", v, iteration)
                    elif isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
                        for tag, x in zip(scalar_tags(k, v, self.class_names), v):
                            self.tb.add_scalar(f"{self.stage}/{prefix}{tag}", x, iteration)
            except Exception as e:  # noqa: BLE001 - the writer thread's error, raised again by the next call
                self._tensorboard_off(e)

    def sync(self) -> None:
        """Make `metrics.json` durable (fsync), as the checkpoints are. Called before each checkpoint and at
        the stage's end: after a machine crash (power, kernel) a resume then finds every record up to the
        iteration it resumes from, not a gap of records still in the page cache at the crash. A process
        crash loses nothing either way (each record is written to the file as it is made)."""
        path = os.path.join(self.folder, "metrics.json")
        if not self.enabled or not os.path.isfile(path):
            return
        try:
            with open(path, "a") as f:
                os.fsync(f.fileno())
        except OSError:  # the disk's error: the checkpoint written next meets it and names it
            pass

    def close(self, _: Optional[object] = None) -> None:
        self.sync()
        if self.tb is not None:
            try:
                self.tb.flush()
                self.tb.close()
            except Exception as e:  # noqa: BLE001 - any writer error (module doc)
                self._tensorboard_off(e)

    def _tensorboard_off(self, error: Exception) -> None:
        """TensorBoard off for the rest of the stage after `error`, with one warning (see the module doc). The
        failed writer is dropped, not closed: closing flushes, which raises its error again."""
        self.tb = None
        reason = (error.strerror or error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        logger.warning("cannot write TensorBoard folder %s: %s; TensorBoard is off for the rest of this stage "
                       "(metrics.json keeps every record)", os.path.join(self.folder, "tb"), reason)


def _quiet_tensorboard_thread_errors() -> None:
    """Let TensorBoard's writer thread die of an error without a traceback on stderr (`threading.excepthook`,
    wrapped once): TensorBoard raises that error again in the main thread at the writer's next call, where
    EventWriter turns it into one warning. Every other thread error still goes to the previous hook."""
    previous = threading.excepthook
    if getattr(previous, "spcl_quiet_tensorboard", False):
        return

    def hook(args):
        if not (isinstance(args.exc_value, Exception) and type(args.thread).__module__.startswith("tensorboard.")):
            previous(args)

    hook.spcl_quiet_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _iteration_of(line: str) -> float:
    """The iteration of a metrics.json line; a line that does not parse (cut short by a kill) counts as past
    every iteration, so it is dropped with the lines after the checkpoint."""
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
