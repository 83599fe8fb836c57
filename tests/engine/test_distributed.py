"""Two gloo processes on the CPU: one align step on halves of a global batch gives the same weights
(hence gradients) and prototype bank as one process on the whole batch, every rank holds the same
bank, and logged values are averaged over processes."""
import os

import torch

from spcl.config import load_config
from spcl.engine import launch
from spcl.engine.stages import AlignTrainer
from spcl.utils import comm

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toy.yaml")


def _cfg(out, protos):
    return load_config(CONFIG, [
        "OUTPUT_DIR", out, "MODEL.FREEZE_BN", "True", "PROTOTYPE.PATH", protos, "ALIGN.SOURCE_BATCH", "4",
        "ALIGN.TARGET_BATCH", "4", "DATASETS.TOY.GENERATE", "False", "SOLVER.OPTIMIZER", "sgd"])


def _step(out, protos, batch_file, result_file):
    """One align step on this process's share of the saved global batch; saves the resulting state."""
    torch.set_num_threads(1)
    rank, world = comm.get_rank(), comm.get_world_size()
    trainer = AlignTrainer(_cfg(os.path.join(out, f"rank{rank}"), protos), os.path.join(out, f"rank{rank}"),
                           torch.device("cpu"))
    batch = torch.load(batch_file)
    share = 4 // world
    part = {dom: {k: v[rank * share:(rank + 1) * share] for k, v in d.items()} for dom, d in batch.items()}
    logs = trainer.run_step(part)
    mean = comm.reduce_mean_dict({"rank": float(rank), **logs})
    torch.save({"model": trainer.model_without_ddp.state_dict(), "bank": trainer.bank.prototypes.clone(), "logs": logs,
                "mean": mean}, result_file.format(rank=rank))


def test_two_processes_match_one(tmp_path):
    torch.manual_seed(0)
    protos = str(tmp_path / "protos.pth")
    torch.save({"prototypes": torch.nn.functional.normalize(torch.randn(19, 512), dim=1)}, protos)
    batch = {dom: {"image": torch.randn(4, 3, 32, 64), "label": torch.randint(0, 19, (4, 32, 64))}
             for dom in ("source", "target")}
    batch_file = str(tmp_path / "batch.pt")
    torch.save(batch, batch_file)

    single = str(tmp_path / "single_{rank}.pt")
    _step(str(tmp_path / "one"), protos, batch_file, single)
    multi = str(tmp_path / "multi_{rank}.pt")
    # gloo: the steps run on the CPU also where GPUs are visible (NCCL would want one GPU per process)
    launch(_step, num_processes=2, args=(str(tmp_path / "two"), protos, batch_file, multi), backend="gloo")

    one = torch.load(single.format(rank=0))
    r0, r1 = torch.load(multi.format(rank=0)), torch.load(multi.format(rank=1))
    # every process holds the same bank, equal to the single-process bank on the whole batch
    assert torch.equal(r0["bank"], r1["bank"])
    assert torch.allclose(r0["bank"], one["bank"], atol=1e-6)
    # the step changed the weights, identically on both ranks and as in one process
    changed = 0
    for k, v in one["model"].items():
        assert torch.equal(r0["model"][k], r1["model"][k]), k
        assert torch.allclose(r0["model"][k], v, rtol=1e-4, atol=1e-6), k
    fresh = AlignTrainer(_cfg(str(tmp_path / "fresh"), protos), str(tmp_path / "fresh"), torch.device("cpu"))
    for k, v in fresh.model.state_dict().items():
        changed += int(not torch.equal(v, one["model"][k]))
    assert changed > 0
    # logged values are averaged over processes
    assert r0["mean"]["rank"] == r1["mean"]["rank"] == 0.5
    assert abs(r0["mean"]["loss_seg"] - (r0["logs"]["loss_seg"] + r1["logs"]["loss_seg"]) / 2) < 1e-6


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    """torchrun with more processes per node than visible GPUs: one message naming the rank, the GPU
    count and both ways out, before NCCL or torch.cuda.set_device fail with 'invalid device ordinal'."""
    from spcl.engine import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    set_device = []
    monkeypatch.setattr(torch.cuda, "set_device", set_device.append)
    try:
        init_distributed()
    except ValueError as e:  # a user error: the tools print it as one line, not a traceback
        msg = str(e)
    else:
        raise AssertionError("no error for LOCAL_RANK 1 on a machine with one GPU")
    assert "LOCAL_RANK=1" in msg and "1 CUDA device(s)" in msg
    assert "--nproc_per_node=1" in msg and "CUDA_VISIBLE_DEVICES=''" in msg
    assert set_device == [] and not torch.distributed.is_initialized()
