"""Stopping a training stage cleanly on a signal (a scheduler's preemption or time-limit warning).

The handler only records the signal. The training loop asks `requested()` after each iteration, saves
a checkpoint at that iteration boundary and raises `Preempted`; a rerun of the same command resumes
there exactly. Under several processes the request is max-reduced over them every iteration, so all
stop after the same iteration: a process that left early would leave the others waiting in a collective.
DataLoader workers ignore these signals unless their main process sends them (`ignore_stop_signals`):
a signal sent to every process of a job would otherwise kill them and fail the loader mid-iteration.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
from typing import Sequence

import torch

from spcl.utils import comm


# POSIX signals some systems lack (Windows has no SIGUSR1): skipped there, so one config runs everywhere.
_POSIX = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT", "SIGQUIT", "SIGALRM", "SIGXCPU")
_UNCATCHABLE = ("SIGKILL", "SIGSTOP")  # a handler for them is refused (OSError: [Errno 22]) when the stage starts


def signal_numbers(names: Sequence[str]) -> list:
    """`["SIGTERM", "SIGUSR1"]` → the signals of this system; a POSIX name this system lacks is skipped,
    any other unknown name, or one no process can catch (SIGKILL, SIGSTOP), is a ValueError naming it."""
    out = []
    for name in names:
        number = getattr(signal, name, None) if isinstance(name, str) else None
        if isinstance(number, signal.Signals) and name in _UNCATCHABLE:
            raise ValueError(f"{name} cannot be caught by any process, so no run can save a checkpoint on it "
                             "(e.g. SIGTERM, SIGUSR1)")
        if isinstance(number, signal.Signals):
            out.append(number)
        elif name not in _POSIX:
            raise ValueError(f"{name!r} is not a signal name (e.g. SIGTERM, SIGUSR1)")
    return out


class Preempted(Exception):
    """A stage stopped on a signal after saving its checkpoint.

    Attributes: signum (the signal), iteration (iterations done), checkpoint (the file a rerun resumes from).
    """

    def __init__(self, message: str, signum: int, iteration: int, checkpoint: str):
        super().__init__(message)
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


class StopOnSignal:
    """Context manager: while active, the given signals are recorded instead of ending the process.

    Handlers can only be set from the main thread; elsewhere (a stage run inside a thread) the signals
    keep their previous handling and `requested()` reports only what other processes received.

    Args:
        signals: signal numbers (e.g. `signal_numbers(cfg.SOLVER.STOP_SIGNALS)`); empty = off.
    """

    def __init__(self, signals: Sequence[int]):
        self.signals = list(signals)
        self.received = 0
        self._previous: dict = {}

    def _record(self, signum, frame) -> None:
        self.received = self.received or int(signum)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def requested(self) -> int:
        """The signal that asks this run to stop (the largest number among the processes' requests), or 0.
        A collective under several processes: every process must call it at the same iteration."""
        if not comm.is_dist():
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64, device=comm.reduce_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())


def _wait_for_signals(signals: tuple, main: int) -> None:
    while True:
        info = signal.sigwaitinfo(signals)
        if info.si_signo == signal.SIGTERM and info.si_pid == main:
            os._exit(0)  # the DataLoader, or multiprocessing at exit, ends its worker (torch's own rule)


def _ignore(signals: tuple, main: int, worker_id: int) -> None:
    # Blocked in every thread (threads started later inherit the mask) and taken by one waiting thread,
    # which alone sees who sent each: a plain SIG_IGN would also ignore the main process's terminate(),
    # and multiprocessing's exit, which joins its children after terminating them, would wait forever.
    # `main` is the process that built the loader, not os.getppid() (under forkserver, the fork server).
    # This protects workers started by fork (Linux's default up to Python 3.13). Under spawn or forkserver
    # the worker imports torch before this runs, which starts a thread with the signals unblocked: they
    # reach it and torch's own handler as before (a worker signalled by a scheduler may then still die).
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=_wait_for_signals, args=(signals, main), daemon=True, name="spcl-stop-signals").start()


def ignore_stop_signals(signals: Sequence[int]):
    """A DataLoader `worker_init_fn` (picklable; None for no signals) under which workers ignore `signals`
    sent by anyone but their main process (the one calling this), which decides when the run stops. A
    SIGTERM from the main process (the loader shutting its workers down) still ends the worker, as torch's
    handler does."""
    signals = tuple(int(s) for s in signals)
    if not signals or not hasattr(signal, "sigwaitinfo"):  # macOS has no sigwaitinfo: torch's handler stays
        return None
    return functools.partial(_ignore, signals, os.getpid())


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `signum` to this process when its parent ends (Linux `PR_SET_PDEATHSIG`).

    torchrun starts its processes in sessions of their own, so when torchrun itself is killed (`kill -9`,
    the OOM killer) nothing reaches them: they would go on training, unseen, into the same folder. With
    SIGTERM (a stop signal by default, SOLVER.STOP_SIGNALS) they instead save after the current iteration
    and stop, all after the same one, and a rerun resumes there. Children of this process (DataLoader
    workers) do not inherit the request. Returns whether it was set (False off Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
