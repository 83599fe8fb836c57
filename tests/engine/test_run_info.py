"""The run record of an output folder (`spcl.utils.env.write_run_info`): config and environment
written once, reruns appended and never overwriting, and a warning when a CPU run continues with
another torch thread count (its results would then differ from an uninterrupted run)."""
import os

import pytest
import torch

from spcl.config import get_cfg
from spcl.utils.env import recorded_threads, write_run_info


@pytest.fixture
def threads():
    """Set torch's thread count for the test, restoring it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_first_record_and_rerun_never_overwrite(tmp_path):
    cfg = get_cfg()
    path = write_run_info(cfg, str(tmp_path))
    assert path == str(tmp_path / "config.yaml")
    assert open(path).read() == cfg.dump()
    env = open(tmp_path / "env.txt").read()
    assert f"threads: {torch.get_num_threads()}," in env

    assert write_run_info(cfg, str(tmp_path)) == path          # same config: matched, not rewritten
    env2 = open(tmp_path / "env.txt").read()
    assert env2.startswith(env) and "--- rerun at" in env2

    other = cfg.clone()
    other.SEED = cfg.SEED + 1
    new = write_run_info(other, str(tmp_path))
    assert os.path.basename(new).startswith("config_") and open(new).read() == other.dump()
    assert open(path).read() == cfg.dump()                    # the original record stays
    assert f"with the config of {os.path.basename(new)}" in open(tmp_path / "env.txt").read()


def test_a_change_in_the_number_of_processes_warns_on_rerun(tmp_path, spcl_log):
    """A run resumed with another number of processes matched neither uninterrupted run, without a word."""
    cfg = get_cfg()
    write_run_info(cfg, str(tmp_path))
    env = tmp_path / "env.txt"
    assert "\nprocesses: 1\n" in env.read_text()
    write_run_info(cfg, str(tmp_path))  # the same count: silent
    assert "process(es)" not in spcl_log.text
    env.write_text(env.read_text().replace("processes: 1", "processes: 2"))  # recorded by a 2-process run
    write_run_info(cfg, str(tmp_path))
    assert spcl_log.text.count("this run uses") == 1
    assert f"{env}: this run uses 1 process(es), the run recorded there used 2;" in spcl_log.text
    assert "torchrun --nproc_per_node=2" in spcl_log.text


def test_recorded_threads_reads_the_last_record(tmp_path):
    env = tmp_path / "env.txt"
    assert recorded_threads(str(env)) is None
    env.write_text("python: 3\nthreads: 4, cpus: 8\n--- rerun ---\nthreads: 2, cpus: 8\n")
    assert recorded_threads(str(env)) == 2
    # damaged bytes (a disk error, an editor's encoding) cost their own line, not the rerun
    env.write_bytes(b"threads: 4, cpus: 8\n\xff\xfe garbage\n--- rerun ---\nthreads: 3, cpus: 8\n")
    assert recorded_threads(str(env)) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning concerns CPU runs")
def test_thread_change_warns_on_rerun(tmp_path, threads, spcl_log):
    cfg = get_cfg()
    threads(1)
    write_run_info(cfg, str(tmp_path))
    write_run_info(cfg, str(tmp_path))                        # same thread count: silent
    assert "torch thread(s)" not in spcl_log.text
    threads(2)
    write_run_info(cfg, str(tmp_path))
    msg = spcl_log.text
    assert msg.count("torch thread(s)") == 1
    assert "uses 2 torch thread(s)" in msg and "used 1" in msg and "OMP_NUM_THREADS=1" in msg
    assert str(tmp_path / "env.txt") in msg
    write_run_info(cfg, str(tmp_path))                        # compared with the latest record (2): silent
    assert spcl_log.text == msg


def test_cpu_model_is_the_first_model_name_of_cpuinfo(tmp_path, monkeypatch):
    from spcl.utils import env as env_mod

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 1234\n"
                    "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: Another CPU\n")
    assert env_mod.cpu_model(str(info)) == "Intel(R) Xeon(R) Gold 1234"
    # no such file, or no model name in it: what the platform says, else "unknown"
    monkeypatch.setattr(env_mod.platform, "processor", lambda: "x86_64")
    assert env_mod.cpu_model(str(tmp_path / "missing")) == "x86_64"
    info.write_text("processor\t: 0\nmodel name\t:\n")
    monkeypatch.setattr(env_mod.platform, "processor", lambda: "")
    assert env_mod.cpu_model(str(info)) == "unknown"


def test_the_record_names_the_cpu_and_the_kernels_torch_picked(tmp_path):
    from spcl.utils.env import cpu_model

    write_run_info(get_cfg(), str(tmp_path))
    env = open(tmp_path / "env.txt").read()
    assert f"cpu: {cpu_model()}, torch cpu capability: {torch.backends.cpu.get_cpu_capability()}\n" in env


def test_default_device_is_the_local_ranks_gpu_modulo_the_gpus_else_the_cpu(monkeypatch):
    from spcl.utils import env as env_mod

    monkeypatch.setattr(env_mod.torch.cuda, "is_available", lambda: False)
    assert env_mod.default_device() == torch.device("cpu")
    monkeypatch.setattr(env_mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(env_mod.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")  # 4 processes on a node with 2 GPUs
    assert env_mod.default_device() == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert env_mod.default_device() == torch.device("cuda", 0)


@pytest.mark.parametrize("flags, has", [("fpu avx2 avx512f", False), ("fpu avx512_bf16", True),
                                        ("fpu amx_bf16 amx_tile", True), (None, True)])
def test_bf16_units_are_read_from_the_cpu_flags(monkeypatch, flags, has):
    """Unknown (no /proc/cpuinfo): True, so no warning is given on a platform it cannot tell."""
    import io

    from spcl.utils import env as env_mod

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        if flags is None:
            raise FileNotFoundError(path)
        return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n")

    monkeypatch.setattr(env_mod, "open", fake_open, raising=False)
    assert env_mod.cpu_has_bf16_units() is has


def test_peak_memory_is_the_max_resident_set_on_the_cpu_and_the_allocators_peak_on_a_gpu_in_mib(monkeypatch):
    """Linux's ru_maxrss is in KiB, torch.cuda.max_memory_allocated in bytes."""
    import types

    from spcl.utils import env as env_mod

    monkeypatch.setattr(env_mod.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=3 * 1024))
    assert env_mod.peak_memory_mb(torch.device("cpu")) == 3.0
    monkeypatch.setattr(env_mod.torch.cuda, "max_memory_allocated", lambda device: 5 * 2**20)  # bytes
    assert env_mod.peak_memory_mb(torch.device("cuda", 0)) == 5.0


def test_seed_all_seeds_python_numpy_and_torch():
    """numpy takes seeds below 2**32: a larger SEED is taken modulo 2**32."""
    import random

    import numpy as np

    from spcl.utils.env import seed_all

    seed = 2**32 + 2**31 + 5
    seed_all(seed)
    drawn = random.random(), np.random.rand(), torch.rand(1).item()
    assert drawn[0] == random.Random(seed).random()
    assert drawn[1] == np.random.RandomState(2**31 + 5).rand()
    assert drawn[2] == torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()


def test_git_describe_marks_local_changes_and_says_unknown_without_git(monkeypatch):
    import types

    from spcl.utils import env as env_mod

    out = {"rev-parse": "abc123\n", "status": " M spcl/x.py\n"}
    monkeypatch.setattr(env_mod.subprocess, "run",
                        lambda cmd, **kw: types.SimpleNamespace(stdout=out[cmd[1]]))
    assert env_mod.git_describe() == "abc123-dirty"
    out["status"] = ""
    assert env_mod.git_describe() == "abc123"
    out["rev-parse"] = ""  # not a git checkout: git says nothing on stdout
    assert env_mod.git_describe() == "unknown"

    def no_git(cmd, **kw):
        raise FileNotFoundError("git")

    monkeypatch.setattr(env_mod.subprocess, "run", no_git)
    assert env_mod.git_describe() == "unknown"


def test_the_record_names_the_processes_the_commit_and_the_command(tmp_path, monkeypatch):
    import sys

    from spcl.utils import env as env_mod

    monkeypatch.setattr(env_mod, "git_describe", lambda: "abc123-dirty")
    monkeypatch.setattr(sys, "argv", ["tools/train.py", "--config", "configs/toy.yaml"])
    lines = env_mod.collect_env().splitlines()
    assert "processes: 1" in lines and "git: abc123-dirty" in lines
    assert "command: tools/train.py --config configs/toy.yaml" in lines
