"""`torchrun --max-restarts 1` with two gloo processes: a stage whose processes all die right after the checkpoint
of iteration 2 is started again by torchrun's elastic agent, resumes from that checkpoint and ends with the same
weights, bit for bit, as an uninterrupted two-process run (the CPU, one thread per process). Before
`init_distributed` put each attempt's process group in a key space of its own, the restarted processes read the
dead ones' gloo addresses from torchrun's store and most restarts failed ("connectFullMesh failed … Connection
refused"; 1 of 6 runs passed).

The file is also the script torchrun runs (`__main__` below)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300
OPTS = ("PIPELINE.STAGES", "['source_only']", "SOURCE_ONLY.STOP_ITER", "4", "SOURCE_ONLY.MAX_ITER", "8",
        "SOLVER.CHECKPOINT_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.PREFLIGHT", "False")


def _torchrun():
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _launch(toy_root: str, out: str, result: str, crash_at: int, port: int) -> str:
    """One torchrun of this file with 2 processes and --max-restarts 1; returns its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = _torchrun() + ["--nnodes", "1", "--nproc_per_node", "2", "--max-restarts", "1", "--monitor-interval", "0.5",
                         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                         os.path.abspath(__file__), toy_root, out, result, str(crash_at)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def test_a_run_restarted_by_torchrun_resumes_and_equals_an_uninterrupted_one(toy_root, tmp_path):
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        pytest.skip("torch.distributed.run (torchrun) is not available in this torch build")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    from test_multinode import _free_port

    _launch(toy_root, str(tmp_path / "whole"), str(tmp_path / "whole.pt"), 0, _free_port())
    _launch(toy_root, str(tmp_path / "crashed"), str(tmp_path / "crashed.pt"), 2, _free_port())
    whole, crashed = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "crashed.pt")
    assert whole["restart"] == 0 and crashed["restart"] == 1  # the second run finished in torchrun's restart
    with open(tmp_path / "crashed" / "log.txt") as f:
        log = f.read()
    assert "resumed from " + os.path.join(str(tmp_path / "crashed"), "checkpoints", "model_0000002.pth") in log
    assert whole["model"].keys() == crashed["model"].keys()
    for k, v in whole["model"].items():
        assert torch.equal(v, crashed["model"][k]), k
    assert any(not torch.equal(v, whole["start"][k]) for k, v in whole["model"].items())  # it trained


if __name__ == "__main__":  # run by torchrun: one process per rank
    import torch.distributed as dist

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: conftest
    from conftest import tiny_cfg
    from spcl.engine import run_stage
    from spcl.engine import checkpoint as checkpointing
    from spcl.engine.launch import init_distributed
    from spcl.engine.stages import SourceOnlyTrainer
    from spcl.utils import comm

    toy_root, out, result, crash_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    init_distributed("gloo")
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if crash_at and restart == 0:  # every process dies right after the (collective) save of iteration `crash_at`
        save = checkpointing.Checkpointer.save

        def save_then_die(self, name, iteration, *args, **kwargs):
            path = save(self, name, iteration, *args, **kwargs)
            if iteration == crash_at and name != "model_best":
                os._exit(3)
            return path

        checkpointing.Checkpointer.save = save_then_die
    cfg = tiny_cfg(toy_root, out, *OPTS)
    try:
        start = SourceOnlyTrainer(cfg, None, torch.device("cpu")).model_without_ddp.state_dict()
        done = run_stage(cfg, "source_only", out, torch.device("cpu"))
        if comm.is_main_process():
            final = torch.load(done["outputs"]["checkpoint"], weights_only=False)["model"]
            torch.save({"model": final, "start": start, "restart": restart}, result)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
