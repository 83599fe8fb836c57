"""A stage stopped by a signal (SOLVER.STOP_SIGNALS: a scheduler's preemption or time-limit warning)
saves at the end of the iteration it is in, and the rerun ends with the weights of an uninterrupted
run; several processes stop after the same iteration; DataLoader workers survive a signal sent to
every process; the tools exit 128 + the signal's number with one line."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import load_tool, tb_scalars, tiny_cfg
from spcl.config import load_config
from spcl.engine import launch, run_stage
from spcl.engine.stages import SourceOnlyTrainer
from spcl.utils.signals import Preempted, StopOnSignal, ignore_stop_signals, signal_numbers

# Bit-equal resume is a CPU property (conftest.hide_gpu).
pytestmark = pytest.mark.usefixtures("on_the_cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTS = ("SOURCE_ONLY.STOP_ITER", "5", "SOURCE_ONLY.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.KEEP_CHECKPOINTS", "5", "PIPELINE.STAGES", "['source_only']")


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _signal_at(monkeypatch, iteration, signum, also_to=lambda: ()):
    """During iteration `iteration` (0-based), send `signum` to this process (and, from another process as
    a scheduler would, to the pids `also_to()` returns); returns the real run_step."""
    original = SourceOnlyTrainer.run_step

    def run_step(self, batch):
        if self.iteration == iteration and self._micro == 0:
            for pid in also_to():
                subprocess.run(["kill", f"-{signal.Signals(signum).name[3:]}", str(pid)], check=True)
            os.kill(os.getpid(), signum)
        return original(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", run_step)
    return original


@pytest.fixture(scope="module")
def reference(toy_root, tmp_path_factory):
    """Final weights of the uninterrupted stage."""
    out = str(tmp_path_factory.mktemp("reference"))
    run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
    return _weights(os.path.join(out, "checkpoints", "model_final.pth"))["model"]


@pytest.mark.parametrize("signame, iteration", [("SIGTERM", 2), ("SIGUSR1", 1)])
def test_a_signal_saves_after_the_current_iteration_and_the_rerun_ends_as_if_uninterrupted(
        reference, toy_root, tmp_path, monkeypatch, signame, iteration):
    signum = getattr(signal, signame)
    before = signal.getsignal(signum)
    out = str(tmp_path)
    original = _signal_at(monkeypatch, iteration, signum)
    with pytest.raises(Preempted) as stopped:
        run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
    done = iteration + 1  # the iteration the signal arrived in is finished, none after it begins
    ckpt = os.path.join(out, "checkpoints", f"model_{done:07d}.pth")
    assert (stopped.value.signum, stopped.value.iteration, stopped.value.checkpoint) == (signum, done, ckpt)
    assert str(stopped.value) == f"stage source_only stopped on {signame} after iteration {done}; saved {ckpt}"
    assert _weights(ckpt)["iteration"] == done
    with open(os.path.join(out, "checkpoints", "last_checkpoint")) as f:
        assert f.read() == os.path.basename(ckpt)
    assert not os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))
    assert signal.getsignal(signum) == before  # the handler is the stage's only while it trains
    # TensorBoard holds every iteration's loss (LOG_PERIOD 1) up to the stop
    assert len(tb_scalars(os.path.join(out, "tb"))["source_only/loss_seg"]) == done
    monkeypatch.setattr(SourceOnlyTrainer, "run_step", original)
    run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
    final = _weights(os.path.join(out, "checkpoints", "model_final.pth"))["model"]
    assert final.keys() == reference.keys()
    for k, v in reference.items():
        assert torch.equal(final[k], v), k


def test_a_signal_in_an_iteration_that_saves_anyway_is_saved_once(toy_root, tmp_path, monkeypatch):
    """Iteration 4 is a periodic checkpoint (CHECKPOINT_PERIOD 2): that save is the resume point."""
    out = str(tmp_path)
    _signal_at(monkeypatch, 3, signal.SIGTERM)
    saves = []
    real_save = SourceOnlyTrainer.__init__

    def init(self, *a, **kw):
        real_save(self, *a, **kw)
        save = self.checkpointer.save
        self.checkpointer.save = lambda name, *args, **kwargs: saves.append(name) or save(name, *args, **kwargs)

    monkeypatch.setattr(SourceOnlyTrainer, "__init__", init)
    with pytest.raises(Preempted) as stopped:
        run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
    assert saves == ["model_0000002", "model_0000004"]
    assert stopped.value.checkpoint.endswith("model_0000004.pth") and stopped.value.iteration == 4


def test_without_stop_signals_the_stage_leaves_the_signal_alone(toy_root, tmp_path, monkeypatch):
    seen = []
    original = SourceOnlyTrainer.run_step

    def run_step(self, batch):
        seen.append(signal.getsignal(signal.SIGTERM))
        return original(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", run_step)
    before = signal.getsignal(signal.SIGTERM)
    out = str(tmp_path / "off")
    run_stage(tiny_cfg(toy_root, out, *OPTS, "SOLVER.STOP_SIGNALS", "[]"), "source_only", out)
    assert seen and all(h == before for h in seen)
    seen.clear()
    out = str(tmp_path / "on")
    run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
    assert seen and all(h != before for h in seen)


def test_dataloader_workers_survive_a_signal_sent_to_every_process(toy_root, tmp_path, monkeypatch):
    """As when a scheduler signals the whole job: the workers too. They ignore it, the main process
    stops cleanly, and the stage resumes from where it stopped."""
    out = str(tmp_path)
    others = {p.pid for p in multiprocessing.active_children()}  # children of earlier tests are left alone
    signalled = []

    def workers():
        signalled.extend(p.pid for p in multiprocessing.active_children() if p.pid not in others)
        return signalled

    original = _signal_at(monkeypatch, 2, signal.SIGTERM, also_to=workers)
    opts = (*OPTS, "DATALOADER.NUM_WORKERS", "1")
    with pytest.raises(Preempted) as stopped:
        run_stage(tiny_cfg(toy_root, out, *opts), "source_only", out)
    assert stopped.value.iteration == 3 and signalled  # the stage's loader workers were signalled too
    monkeypatch.setattr(SourceOnlyTrainer, "run_step", original)
    run_stage(tiny_cfg(toy_root, out, *opts), "source_only", out)
    assert _weights(os.path.join(out, "checkpoints", "model_final.pth"))["iteration"] == 5


def _worker(conn, init):
    init(0)
    conn.send("ready")
    while True:
        conn.send(conn.recv())  # answers while it lives


def test_a_worker_ignores_stop_signals_from_others_and_ends_on_its_main_process_sigterm():
    """A worker of the main process: SIGTERM and SIGUSR1 from another process (a scheduler, here `kill`)
    leave it alive; SIGTERM from the main process (DataLoader shutdown, multiprocessing's exit, which
    then joins it) ends it at once with status 0, as torch's own worker handler does."""
    assert ignore_stop_signals([]) is None
    ours, theirs = multiprocessing.Pipe()
    init = ignore_stop_signals([signal.SIGTERM, signal.SIGUSR1])  # built in the main process, as a loader's
    worker = multiprocessing.get_context("fork").Process(target=_worker, args=(theirs, init), daemon=True)
    worker.start()
    try:
        assert ours.poll(30) and ours.recv() == "ready"
        for name in ("TERM", "USR1", "TERM"):
            subprocess.run(["kill", f"-{name}", str(worker.pid)], check=True)
            ours.send(name)
            assert ours.poll(30) and ours.recv() == name and worker.is_alive()
        worker.terminate()  # SIGTERM from its parent
        worker.join(30)
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            worker.kill()


def _two_process_stop(toy_root, out, result):
    """Only rank 1 is signalled, during iteration 1: both ranks must stop after iteration 2."""
    from spcl.utils import comm

    torch.set_num_threads(1)
    rank = comm.get_rank()
    original = SourceOnlyTrainer.run_step

    def run_step(self, batch):
        if rank == 1 and self.iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    SourceOnlyTrainer.run_step = run_step
    try:
        run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
        torch.save({"stopped": None}, result.format(rank=rank))
    except Preempted as e:
        torch.save({"stopped": (e.signum, e.iteration, e.checkpoint)}, result.format(rank=rank))


def test_processes_stop_after_the_same_iteration_when_one_is_signalled(toy_root, tmp_path):
    out, result = str(tmp_path / "run"), str(tmp_path / "rank{rank}.pt")
    launch(_two_process_stop, num_processes=2, args=(toy_root, out, result), backend="gloo")
    r0, r1 = (torch.load(result.format(rank=r))["stopped"] for r in (0, 1))
    ckpt = os.path.join(out, "checkpoints", "model_0000002.pth")
    assert r0 == r1 == (signal.SIGTERM, 2, ckpt)
    assert _weights(ckpt)["iteration"] == 2


def test_stop_on_signal_records_the_first_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with StopOnSignal([signal.SIGUSR1, signal.SIGUSR2]) as stop:
        assert stop.requested() == 0
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested() == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR1) == before


def test_an_unknown_signal_name_is_a_config_error():
    assert signal_numbers(["SIGTERM", "SIGUSR1"]) == [signal.SIGTERM, signal.SIGUSR1]
    with pytest.raises(ValueError, match=r"SOLVER.STOP_SIGNALS = \['SIGTERM', 'SIGTREM'\]: 'SIGTREM' is not a signal"):
        load_config("", ["SOLVER.STOP_SIGNALS", "['SIGTERM', 'SIGTREM']"])
    with pytest.raises(ValueError, match="SOLVER.STOP_SIGNALS"):
        load_config("", ["SOLVER.STOP_SIGNALS", "['SIG_IGN']"])  # a name in `signal`, not a signal


def test_a_signal_no_process_can_catch_is_a_config_error():
    """The config accepts exactly the signals a handler can be set for: SIGKILL and SIGSTOP used to pass and
    stop the stage when it started, with `[Errno 22] Invalid argument`."""
    refused = []
    for number in sorted(signal.valid_signals() & set(signal.Signals)):
        handler = signal.getsignal(number)
        if handler is None:  # a handler set outside Python: it cannot be put back
            continue
        try:
            signal.signal(number, handler)  # the same handler again: changes nothing where it is allowed
            catchable = True
        except (OSError, ValueError):
            catchable = False
        name = signal.Signals(number).name
        if catchable:
            assert signal_numbers([name]) == [number]
        else:
            refused.append(name)
            with pytest.raises(ValueError, match=rf"SOLVER.STOP_SIGNALS = \['SIGTERM', '{name}'\]: {name} cannot be "
                                                 "caught by any process, so no run can save a checkpoint on it"):
                load_config("", ["SOLVER.STOP_SIGNALS", f"['SIGTERM', '{name}']"])
    assert sorted(refused) == ["SIGKILL", "SIGSTOP"]  # the property checked above is not vacuous on this system


def test_the_default_signals_work_where_a_system_lacks_one(monkeypatch):
    """Windows has no SIGUSR1, macOS no sigwaitinfo: the default config still loads and trains there."""
    monkeypatch.delattr(signal, "SIGUSR1")
    assert signal_numbers(["SIGTERM", "SIGUSR1"]) == [signal.SIGTERM]
    load_config("", [])
    with pytest.raises(ValueError, match="'SIGUSR3' is not a signal name"):
        signal_numbers(["SIGUSR3"])
    monkeypatch.delattr(signal, "sigwaitinfo")
    assert ignore_stop_signals([signal.SIGTERM]) is None  # DataLoader workers keep torch's own handler


def test_the_tools_exit_with_128_plus_the_signal_and_say_where_to_resume(capsys):
    common = load_tool("_common")

    def main(argv):
        raise Preempted("stage align stopped on SIGTERM after iteration 7; saved out/3_align/checkpoints/x.pth",
                        signal.SIGTERM, 7, "out/3_align/checkpoints/x.pth")

    with pytest.raises(SystemExit) as code:
        common.run_main(main, [])
    assert code.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith(": stage align stopped on SIGTERM after iteration 7; saved out/3_align/checkpoints/x.pth; "
                           "rerun the same command to resume from there")


def test_train_py_stopped_by_sigterm_exits_143_and_the_rerun_finishes(toy_root, tmp_path):
    """The whole path through the CLI: a SIGTERM once the first periodic checkpoint exists."""
    out = str(tmp_path / "run")
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"),
            "--config", os.path.join(ROOT, "configs", "toy.yaml"), "OUTPUT_DIR", out,
            "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False",
            "INPUT.SOURCE_SIZE", "[64, 32]", "INPUT.TARGET_SIZE", "[64, 32]", "INPUT.TEST_SIZE", "[64, 32]",
            "SOURCE_ONLY.SOURCE_BATCH", "2", "SOURCE_ONLY.STOP_ITER", "30", "SOURCE_ONLY.MAX_ITER", "30",
            "SOLVER.CHECKPOINT_PERIOD", "2", "PIPELINE.STAGES", "['source_only']"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pointer = os.path.join(out, "0_source_only", "checkpoints", "last_checkpoint")
    while not os.path.exists(pointer) and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert "stage source_only stopped on SIGTERM after iteration " in last and last.endswith("resume from there")
    done = int(last.split("after iteration ")[1].split(";")[0])
    assert 2 <= done < 30
    ckpt = os.path.join(out, "0_source_only", "checkpoints", f"model_{done:07d}.pth")
    assert f"saved {ckpt}" in last and _weights(ckpt)["iteration"] == done
    rerun = subprocess.run(args, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"stage source_only: iterations {done} → 30" in rerun.stderr + rerun.stdout  # resumed there
    assert _weights(os.path.join(out, "0_source_only", "checkpoints", "model_final.pth"))["iteration"] == 30


def test_the_stop_signals_may_change_on_resume_and_runs_from_before_the_key_resume():
    """Which signals stop a run changes nothing it computes: not a config drift."""
    import yaml

    from spcl.config import config_drift

    current = load_config("", ["SOLVER.STOP_SIGNALS", "[]"])
    recorded = yaml.safe_load(load_config("").dump())
    assert config_drift(recorded, current) == []
    del recorded["SOLVER"]["STOP_SIGNALS"]  # a run folder written before the key existed
    assert config_drift(recorded, current) == []
    recorded["SOLVER"]["MOMENTUM"] = 0.5  # the check itself still sees a key that matters
    assert [k for k, _, _ in config_drift(recorded, current)] == ["SOLVER.MOMENTUM"]


PARENT = '''
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {child!r}], start_new_session=True)  # as torchrun starts them
child.wait()
'''
CHILD = '''
import os, signal, sys, time
sys.path.insert(0, {root!r})
from spcl.utils.io import atomic_write
from spcl.utils.signals import end_with_parent
def put(path, text):  # whole or absent: the test polls for the file, then reads it
    atomic_write(path, lambda f: f.write(text), binary=False)
def record(signum, frame):
    put({seen!r}, str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, record)
assert end_with_parent(signal.SIGTERM)
put({ready!r}, str(os.getpid()))
time.sleep(60)
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_process_started_in_its_own_session_gets_sigterm_when_its_parent_is_killed(tmp_path):
    """torchrun's case: its processes have sessions of their own, so `kill -9` of torchrun reaches none of
    them. After end_with_parent the kernel sends SIGTERM (which stops a stage cleanly) instead."""
    seen, ready = str(tmp_path / "seen"), str(tmp_path / "ready")
    child = CHILD.format(root=ROOT, seen=seen, ready=ready)
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(child=child)])
    try:
        deadline = time.time() + 120
        while not os.path.exists(ready) and time.time() < deadline and parent.poll() is None:
            time.sleep(0.05)
        assert os.path.exists(ready) and not os.path.exists(seen)
        parent.kill()
        parent.wait(30)
        deadline = time.time() + 20
        while not os.path.exists(seen) and time.time() < deadline:
            time.sleep(0.05)
        assert open(seen).read() == str(int(signal.SIGTERM))
    finally:
        if parent.poll() is None:
            parent.kill()
        if os.path.exists(ready) and not os.path.exists(seen):  # an orphan: do not leave it running
            try:
                os.kill(int(open(ready).read()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@pytest.mark.parametrize("torchrun", [True, False])
def test_processes_started_by_torchrun_end_with_it(torchrun, monkeypatch):
    """init_distributed asks for SIGTERM on torchrun's end only in processes torchrun started."""
    import importlib

    launch_module = importlib.import_module("spcl.engine.launch")  # `spcl.engine.launch` is also the function
    asked = []
    monkeypatch.setattr(launch_module, "end_with_parent", lambda signum: asked.append(signum) or True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    if torchrun:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    else:
        monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert launch_module.init_distributed() is False
    assert asked == ([signal.SIGTERM] if torchrun else [])


def test_a_signal_given_as_a_number_is_refused_by_name():
    """SOLVER.STOP_SIGNALS names signals: a number (`[15]`) is an unknown name, not a TypeError."""
    with pytest.raises(ValueError, match=r"^15 is not a signal name \(e\.g\. SIGTERM, SIGUSR1\)$"):
        signal_numbers([15])


def test_a_stage_run_in_a_thread_leaves_the_signals_alone():
    """Python sets handlers only from the main thread: elsewhere StopOnSignal changes nothing and still works."""
    import threading

    before = signal.getsignal(signal.SIGUSR1)
    seen = []

    def stage():
        try:
            with StopOnSignal([signal.SIGUSR1]) as stop:
                seen.append((stop.requested(), signal.getsignal(signal.SIGUSR1)))
        except Exception as e:  # noqa: BLE001 - reported to the test below
            seen.append(e)

    t = threading.Thread(target=stage)
    t.start()
    t.join()
    assert seen == [(0, before)]
