"""Two gloo processes on the CPU: one align step on halves of a global batch gives the same weights
(hence gradients) and prototype bank as one process on the whole batch, every rank holds the same
bank, and logged values are averaged over processes."""
import copy
import os

import pytest
import torch

from spcl.config import load_config
from spcl.engine import launch
from spcl.engine.stages import AlignTrainer
from spcl.losses import segmentation_ce
from spcl.utils import comm

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toy.yaml")


def _cfg(out, protos):
    return load_config(CONFIG, [
        "OUTPUT_DIR", out, "MODEL.FREEZE_BN", "True", "PROTOTYPE.PATH", protos, "ALIGN.SOURCE_BATCH", "4",
        "ALIGN.TARGET_BATCH", "4", "DATASETS.TOY.GENERATE", "False", "SOLVER.OPTIMIZER", "sgd",
        "SOLVER.LOG_PERIOD", "1"])


def _step(out, protos, batch_file, result_file):
    """One align step on this process's share of the saved global batch; saves the resulting state."""
    torch.set_num_threads(1)
    rank, world = comm.get_rank(), comm.get_world_size()
    trainer = AlignTrainer(_cfg(os.path.join(out, f"rank{rank}"), protos), os.path.join(out, f"rank{rank}"),
                           torch.device("cpu"))
    batch = torch.load(batch_file)
    share = 4 // world
    part = {dom: {k: v[rank * share:(rank + 1) * share] for k, v in d.items()} for dom, d in batch.items()}
    head = copy.deepcopy(trainer.model_without_ddp.head)  # the classifier as it is during the step
    feats = []
    trainer.model_without_ddp.backbone.register_forward_hook(lambda m, i, o: feats.append(o.detach().clone()))
    logs = trainer.run_step(part)
    f = feats[0].requires_grad_(True)  # this process's source feature map
    loss_seg = segmentation_ce(head(f), part["source"]["label"], trainer.cfg.LOSS.SOURCE_TEMPERATURE)
    (g_seg,) = torch.autograd.grad(loss_seg, f)
    mean = comm.reduce_mean_dict({"rank": float(rank), **logs})
    torch.save({"model": trainer.model_without_ddp.state_dict(), "bank": trainer.bank.prototypes.clone(), "logs": logs,
                "mean": mean, "grad_feat_seg": g_seg.norm().item()}, result_file.format(rank=rank))


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
    # the gradient L_seg sends to each process's feature map, also through DDP's output node (it was 0)
    for r in (one, r0, r1):
        assert r["logs"]["grad_feat_seg"] == pytest.approx(r["grad_feat_seg"], rel=1e-4)
        assert 0 < r["logs"]["grad_ratio_src"] < 1 and 0 < r["logs"]["grad_ratio_tgt"] < 1
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


def _pipeline(cfg):
    from spcl.engine import run_pipeline

    torch.set_num_threads(1)
    run_pipeline(cfg, torch.device("cpu"))


def test_the_whole_pipeline_under_two_processes(tmp_path):
    """Every stage under two gloo processes, on target sets that do not split evenly (7 training, 5 val
    images): the run finishes (the pseudo-label stage used to fail: one process removed the shared label
    cache another still read), its pseudo labels are those one process writes from the same checkpoint,
    and the mIoU it records is the one process's mIoU of its final weights (no image counted twice or
    left out)."""
    import json

    import numpy as np
    from PIL import Image

    from conftest import tiny_cfg
    from spcl.engine.pipeline import run_stage_once
    from spcl.evaluation import evaluate_checkpoint
    from spcl.toy import generate_toy_dataset

    toy, out = tmp_path / "toy", tmp_path / "two"
    generate_toy_dataset(toy, seed=1, num_source=8, num_target_train=7, num_target_val=5, size=(64, 32))
    launch(_pipeline, num_processes=2, args=(tiny_cfg(str(toy), str(out)),), backend="gloo")
    summary = json.load(open(out / "summary.json"))["stages"]
    assert [s["stage"] for s in summary] == ["adv_warmup", "prototypes", "pseudo_labels", "align", "pseudo_labels",
                                             "self_train"]
    for stage in ("2_pseudo_labels", "4_pseudo_labels"):
        cfg = load_config(str(out / stage / "config.yaml"))
        ref = tmp_path / f"one_{stage}"
        run_stage_once(cfg, "pseudo_labels", str(ref), torch.device("cpu"))
        names = sorted(os.listdir(ref / "labels"))
        assert len([n for n in names if n.endswith(".png")]) == 7
        assert sorted(os.listdir(out / stage / "labels")) == names  # no .cache left behind
        for n in names:
            if n.endswith(".png"):
                assert np.array_equal(np.array(Image.open(out / stage / "labels" / n)),
                                      np.array(Image.open(ref / "labels" / n))), (stage, n)
        two, one = (json.load(open(d / "labels" / "thresholds.json")) for d in (out / stage, ref))
        assert two["thresholds"] == one["thresholds"] and two["num_images"] == one["num_images"] == 7
    for stage in ("0_adv_warmup", "3_align", "5_self_train"):
        recorded = json.load(open(out / stage / "manifest.json"))["metrics"]["mIoU"]
        cfg = load_config(str(out / stage / "config.yaml"))
        one = evaluate_checkpoint(cfg, str(out / stage / "checkpoints" / "model_final.pth"), torch.device("cpu"))
        assert abs(recorded - one["mIoU"]) < 1e-9, stage


def test_one_process_runs_here_without_a_process_group(monkeypatch):
    """spcl/engine/launch.py: launch(fn, 1) calls fn in this process (no spawn: the caller sees what fn did, and a
    closure needs no pickling), and init_distributed outside torchrun (WORLD_SIZE unset or 1) makes no process
    group and says so (False), so that the caller runs as one process."""
    from spcl.engine import init_distributed

    seen = []
    launch(lambda x: seen.append(x), 1, args=(3,))
    assert seen == [3]
    for world in (None, "1"):
        if world is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", world)
        assert init_distributed() is False and not torch.distributed.is_initialized()


class _FakeGroup:
    """Stands in for torch.distributed in spcl.utils.comm: a process group of `world` processes seen from `rank`,
    whose collectives record their calls; all_reduce adds `others` (the other processes' tensor)."""

    ReduceOp = torch.distributed.ReduceOp

    def __init__(self, world, rank, backend="gloo", others=None):
        self.world, self.rank, self.backend, self.others, self.calls = world, rank, backend, others, []

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_world_size(self):
        return self.world

    def get_rank(self):
        return self.rank

    def get_backend(self):
        return self.backend

    def barrier(self):
        self.calls.append("barrier")

    def all_reduce(self, tensor, op):
        self.calls.append(("all_reduce", op))
        tensor += self.others

    def broadcast(self, tensor, src):
        self.calls.append(("broadcast", tensor.data_ptr(), src))


def test_comm_helpers_follow_the_process_group(monkeypatch):
    """spcl/utils/comm.py under a process group (a fake one): rank and world size are the group's, process 1
    is not the main one, the barrier and the sum run over the group; reduce_mean_dict averages each value over
    the processes, matched by key whatever the order each process built its dict in; broadcast_buffers sends
    every buffer from the process asked for; tensors for a collective go to the current GPU under NCCL only.
    Without a group (or in a group of one) every helper works on this process alone."""
    from spcl.utils.progress import progress

    assert (comm.get_rank(), comm.get_world_size(), comm.is_main_process()) == (0, 1, True)
    assert comm.reduce_mean_dict({"b": 1.0, "a": 3.0}) == {"b": 1.0, "a": 3.0}
    assert comm.reduce_device() == torch.device("cpu")
    t = torch.tensor([1.0, 2.0])
    assert comm.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    items = [1, 2]
    assert progress(items, "x", enabled=False) is items
    bar = progress(items, "name")
    assert list(bar) == items and bar.desc == "name" and bar.leave is False

    big = 2.0 ** 24 + 1  # a float64 sum; float32 would round it to 2 ** 24
    fake = _FakeGroup(world=2, rank=1, others=torch.tensor([5.0, 7.0, big], dtype=torch.float64))
    monkeypatch.setattr(comm, "dist", fake)
    assert (comm.get_rank(), comm.get_world_size(), comm.is_main_process()) == (1, 2, False)
    assert progress(items, "name") is items  # the bar is the main process's
    comm.synchronize()
    assert fake.calls == ["barrier"]
    fake.calls.clear()
    # this process: a = 3, b = 1, c = big; the other: a = 5, b = 7, c = big (sent in key order)
    assert comm.reduce_mean_dict({"b": 1.0, "c": big, "a": 3.0}) == {"a": 4.0, "b": 4.0, "c": big}
    assert fake.calls == [("all_reduce", torch.distributed.ReduceOp.SUM)]
    assert comm.reduce_mean_dict({}) == {}
    module = torch.nn.BatchNorm2d(2)
    fake.calls.clear()
    comm.broadcast_buffers(module, src=1)
    assert fake.calls == [("broadcast", b.data_ptr(), 1) for b in module.buffers()] and len(fake.calls) == 3
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    fake.backend = "nccl"
    assert comm.reduce_device() == torch.device("cuda", 3)

    alone = _FakeGroup(world=1, rank=0)
    monkeypatch.setattr(comm, "dist", alone)
    comm.synchronize()
    comm.broadcast_buffers(module)
    assert comm.reduce_mean_dict({"a": 2.0}) == {"a": 2.0} and comm.all_reduce_sum(t) is t and alone.calls == []
