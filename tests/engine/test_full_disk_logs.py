"""A full disk (or a folder that cannot be made) under the run's log file and TensorBoard folder: each is given up
with one warning naming it and the OS error, no traceback is printed, the console keeps every line,
`metrics.json` keeps every record, and the caller (training) goes on. The disk is simulated by a file object whose
writes fail with ENOSPC, as a full disk's do; the folder that cannot be made is real (a file where it should be)."""
import errno
import io
import json
import logging
import os
import threading
import types

import pytest

from conftest import restored_spcl_logger, tb_scalars
from spcl.engine.events import EventWriter
from spcl.utils.logger import _LazyFileHandler, setup_logger

NO_SPACE = "No space left on device"


class ResourceExhaustedError(Exception):
    """What TensorFlow's gfile raises on a full disk (a tf.errors.OpError): not an OSError. TensorBoard writes
    through it when TensorFlow is installed."""


class _FullDisk(io.FileIO):
    """A file on a full disk: every write fails with ENOSPC (or with `error`, a class taking the message, when
    set). `attempts` counts the writes tried on it."""

    attempts = 0
    error = None

    def write(self, data):
        type(self).attempts += 1
        if self.error is not None:
            raise self.error(NO_SPACE)
        raise OSError(errno.ENOSPC, NO_SPACE)


@pytest.fixture
def spcl_logger():
    """The `spcl` logger with no handlers (setup_logger then adds a console on the captured stdout), and
    `records`, every record it handles; put back as it was afterwards."""
    with restored_spcl_logger():
        logger = logging.getLogger("spcl")
        logger.handlers.clear()
        logger.records = []
        recorder = logging.Handler(logging.INFO)
        recorder.emit = logger.records.append
        logger.addHandler(recorder)
        yield logger
        del logger.records


def _no_traceback(err: str) -> None:
    for text in ("Traceback", "Logging error", "Exception in thread"):
        assert text not in err, err


# --------------------------------------------------------------------------- the log file
def test_a_full_disk_gives_the_log_file_up_with_one_warning(tmp_path, capsys, spcl_logger):
    setup_logger(str(tmp_path / "run"))
    path = str(tmp_path / "run" / "log.txt")
    spcl_logger.info("before the disk fills")
    with open(path) as f:
        assert "before the disk fills" in f.read()  # the normal path writes the file
    fh = next(h for h in spcl_logger.handlers if isinstance(h, _LazyFileHandler))
    fh.stream.close()
    fh.stream = io.TextIOWrapper(io.BufferedWriter(_FullDisk(path, "a")))  # the disk fills
    _FullDisk.attempts = 0

    spcl_logger.info("line 1")  # returns: no exception for the caller
    tried = _FullDisk.attempts
    spcl_logger.info("line 2")
    spcl_logger.warning("line 3")

    assert tried > 0 and _FullDisk.attempts == tried  # later lines are not tried on the file again
    assert fh.unwritable and fh.stream is None
    out, err = capsys.readouterr()
    _no_traceback(err)
    warnings = [ln for ln in err.splitlines() if "cannot write log file" in ln]
    assert warnings == [ln for ln in err.splitlines() if ln.strip()], err  # nothing else on stderr
    assert len(warnings) == 1, err
    assert f"cannot write log file {path}: {NO_SPACE}; its lines go to the console only from here on" in warnings[0]
    assert "WARNING" in warnings[0]
    for line in ("before the disk fills", "line 1", "line 2", "line 3"):
        assert line in out, out  # the console keeps every line
    with open(path) as f:
        assert "line" not in f.read()


def test_a_log_folder_that_cannot_be_made_is_given_up_with_one_warning(tmp_path, capsys, spcl_logger):
    (tmp_path / "out").write_text("a file where the output folder should be")
    setup_logger(str(tmp_path / "out" / "run"))
    path = str(tmp_path / "out" / "run" / "log.txt")
    for i in range(3):
        spcl_logger.info(f"line {i}")  # returns: no exception for the caller
    out, err = capsys.readouterr()
    _no_traceback(err)
    warnings = [ln for ln in err.splitlines() if "cannot write log file" in ln]
    assert len(warnings) == 1, err
    assert f"cannot write log file {path}: Not a directory;" in warnings[0]
    assert all(f"line {i}" in out for i in range(3)), out


def test_a_message_that_cannot_be_formatted_is_reported_as_logging_does_and_the_file_stays(tmp_path, capsys,
                                                                                           spcl_logger):
    """Only an OSError gives the log file up: a bug in a message (a format that does not fit its arguments) is
    printed as logging prints it, and later lines still reach the file."""
    setup_logger(str(tmp_path / "run"))
    spcl_logger.info("%d apples", "three")  # returns: logging reports it, the caller goes on
    spcl_logger.info("the next line")
    fh = next(h for h in spcl_logger.handlers if isinstance(h, _LazyFileHandler))
    assert not fh.unwritable
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "cannot write log file" not in err
    with open(tmp_path / "run" / "log.txt") as f:
        assert "the next line" in f.read()


# --------------------------------------------------------------------------- TensorBoard
@pytest.fixture
def thread_errors(monkeypatch):
    """The errors that reach `threading.excepthook` (which prints them as tracebacks) during the test."""
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    yield seen


def _fill_the_disk(monkeypatch, gate=None, error=None):
    """TensorBoard's local file system writes through `io.open` of its gfile module: from here on they fail
    (once `gate`, a threading.Event, is set: TensorBoard's writer thread waits for it), with `error` when given."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    monkeypatch.setattr(_FullDisk, "error", error)

    def full_disk_open(filename, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode:
            if gate is not None:
                assert gate.wait(timeout=10)
            return _FullDisk(filename, mode.replace("b", ""))
        return io.open(filename, mode, *args, **kwargs)

    monkeypatch.setattr(gfile, "io", types.SimpleNamespace(open=full_disk_open))


def _join_tensorboard_threads(before):
    """Wait for the TensorBoard writer threads started since `before` (a set of threads) to end: a failed one calls
    the excepthook as it ends. Writers that earlier tests in this process left open are not waited for: each
    would cost the whole timeout."""
    for t in threading.enumerate():
        if t not in before and type(t).__module__.startswith("tensorboard."):
            t.join(timeout=10)


def _tb_warnings(logger):
    return [r for r in logger.records if "TensorBoard" in r.getMessage()]


@pytest.mark.parametrize("error", [None, ResourceExhaustedError], ids=["OSError", "TensorFlow's error"])
@pytest.mark.parametrize("fills", ["before the stage", "during the stage", "at the stage's end"])
def test_a_full_disk_turns_tensorboard_off_with_one_warning(tmp_path, monkeypatch, capsys, spcl_logger,
                                                            thread_errors, fills, error):
    pytest.importorskip("tensorboard")
    before = set(threading.enumerate())
    if fills == "before the stage":
        _fill_the_disk(monkeypatch, error=error)
    ev = EventWriter(str(tmp_path), "align")  # returns: no exception for the caller
    ev.write(1, {"loss": 1.0})
    if fills != "before the stage":
        assert ev.tb is not None
        ev.tb.flush()
        assert tb_scalars(str(tmp_path / "tb")) == {"align/loss": [1.0]}  # the normal path writes TensorBoard
    if fills == "at the stage's end":  # the error first shows when close() flushes the last iteration's scalars
        gate = threading.Event()
        _fill_the_disk(monkeypatch, gate, error)
        ev.write(2, {"loss": 2.0})
        assert ev.tb is not None
        gate.set()
        iterations = [1, 2]
    else:
        if fills == "during the stage":
            _fill_the_disk(monkeypatch, error=error)
        for it in range(2, 6):
            ev.write(it, {"loss": float(it), "IoU": [0.5] * 19}, prefix="val/" if it == 5 else "")
        iterations = [1, 2, 3, 4, 5]
    ev.close()
    _join_tensorboard_threads(before)

    assert ev.tb is None
    assert thread_errors == []  # the writer thread's error was not printed as a traceback
    _no_traceback(capsys.readouterr().err)
    warnings = _tb_warnings(spcl_logger)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    reason = NO_SPACE if error is None else f"ResourceExhaustedError: {NO_SPACE}"
    assert warnings[0].getMessage() == (
        f"cannot write TensorBoard folder {tmp_path / 'tb'}: {reason}; TensorBoard is off for the rest of "
        "this stage (metrics.json keeps every record)")
    with open(tmp_path / "metrics.json") as f:
        assert [json.loads(ln)["iteration"] for ln in f] == iterations


def test_a_tensorboard_folder_that_cannot_be_made_turns_it_off(tmp_path, capsys, spcl_logger, thread_errors):
    pytest.importorskip("tensorboard")
    (tmp_path / "tb").write_text("a file where the TensorBoard folder should be")
    ev = EventWriter(str(tmp_path), "align")
    for it in range(1, 4):
        ev.write(it, {"loss": float(it)})
    ev.close()
    assert ev.tb is None and thread_errors == []
    _no_traceback(capsys.readouterr().err)
    warnings = _tb_warnings(spcl_logger)
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith(f"cannot write TensorBoard folder {tmp_path / 'tb'}: File exists;")
    with open(tmp_path / "metrics.json") as f:
        assert len(f.readlines()) == 3
    assert os.path.isfile(tmp_path / "tb")
