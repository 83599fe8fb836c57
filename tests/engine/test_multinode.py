"""Two "nodes" on this machine: two `torchrun --nnodes 2 --nproc_per_node 1` launchers meeting at a
c10d rendezvous on 127.0.0.1 (gloo, loopback only) run one align step on their halves of a saved
global batch; the weights and the prototype bank equal those of one process on the whole batch
(the multi-node path: env:// set-up by torchrun's elastic agent, global ranks over two launchers).

The file is also the script torchrun runs (`__main__` below)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from test_distributed import _cfg  # the same config as the one-process test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 120


def _step(out, protos, batch_file, result_file):
    """One align step on this process's share of the saved global batch; saves the resulting state."""
    from spcl.engine.stages import AlignTrainer
    from spcl.utils import comm

    torch.set_num_threads(1)
    rank, world = comm.get_rank(), comm.get_world_size()
    trainer = AlignTrainer(_cfg(os.path.join(out, f"rank{rank}"), protos), None, torch.device("cpu"))
    batch = torch.load(batch_file)
    share = 4 // world
    part = {dom: {k: v[rank * share:(rank + 1) * share] for k, v in d.items()} for dom, d in batch.items()}
    logs = trainer.train_step([part])
    torch.save({"model": trainer.model_without_ddp.state_dict(), "bank": trainer.bank.prototypes.clone(),
                "logs": logs, "world": world, "rank": rank, "node": os.environ.get("GROUP_RANK"),
                "ddp": type(trainer.model).__name__}, result_file.format(rank=rank))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun():
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def test_two_nodes_match_one_process(tmp_path):
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        pytest.skip("torch.distributed.run (torchrun) is not available in this torch build")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    torch.manual_seed(0)
    protos = str(tmp_path / "protos.pth")
    torch.save({"prototypes": torch.nn.functional.normalize(torch.randn(19, 512), dim=1)}, protos)
    batch = {dom: {"image": torch.randn(4, 3, 32, 64), "label": torch.randint(0, 19, (4, 32, 64))}
             for dom in ("source", "target")}
    batch_file = str(tmp_path / "batch.pt")
    torch.save(batch, batch_file)
    single = str(tmp_path / "single_{rank}.pt")
    _step(str(tmp_path / "one"), protos, batch_file, single)

    port, multi = _free_port(), str(tmp_path / "multi_{rank}.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    for node in (0, 1):
        cmd = _torchrun() + ["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
                             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                             "--rdzv-id", "spcl-multinode-test", "--max-restarts", "0",
                             os.path.abspath(__file__), str(tmp_path / "two"), protos, batch_file, multi]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"torchrun nodes did not finish within {TIMEOUT} s")
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]

    one = torch.load(single.format(rank=0))
    r0, r1 = torch.load(multi.format(rank=0)), torch.load(multi.format(rank=1))
    assert r0["world"] == r1["world"] == 2 and {r0["node"], r1["node"]} == {"0", "1"}  # one rank per node
    assert r0["ddp"] == "DistributedDataParallel"
    assert torch.equal(r0["bank"], r1["bank"])
    assert torch.allclose(r0["bank"], one["bank"], atol=1e-6)
    changed = 0
    start = _cfg_fresh_state(tmp_path, protos)
    for k, v in one["model"].items():
        assert torch.equal(r0["model"][k], r1["model"][k]), k
        assert torch.allclose(r0["model"][k], v, rtol=1e-4, atol=1e-6), k
        changed += int(not torch.equal(v, start[k]))
    assert changed > 0
    # each node's loss is its half's; their mean is the single process's (equal halves, no ignore)
    mean = (r0["logs"]["loss_seg"] + r1["logs"]["loss_seg"]) / 2
    assert abs(mean - one["logs"]["loss_seg"]) < 1e-5


def _cfg_fresh_state(tmp_path, protos):
    from spcl.engine.stages import AlignTrainer

    return AlignTrainer(_cfg(str(tmp_path / "fresh"), protos), None, torch.device("cpu")).model.state_dict()


if __name__ == "__main__":  # run by torchrun: one process per "node"
    import torch.distributed as dist

    from spcl.engine.launch import init_distributed

    init_distributed()
    try:
        _step(*sys.argv[1:5])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
