"""Process-group helpers that also work in a single process (no torch.distributed initialised).

Used by the trainer, the prototype bank, the evaluator and the threshold statistics.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across processes; a no-op in one process."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def reduce_device() -> torch.device:
    """Where tensors must live for a collective: the current GPU under NCCL, else the CPU (gloo, or
    one process)."""
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place over processes and return it (unchanged in one process)."""
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduce_mean_dict(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of python floats over processes (for logging losses)."""
    if not values or get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=reduce_device())
    all_reduce_sum(t)
    t /= get_world_size()
    return {k: v.item() for k, v in zip(keys, t)}


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer of `module` (BatchNorm running statistics) from process `src` to all the others; a
    no-op in one process. Without SyncBatchNorm (trainable BatchNorm on the CPU) each process's last forward
    leaves its own running statistics; process 0's are the ones its checkpoints hold."""
    if is_dist() and get_world_size() > 1:
        for buf in module.buffers():
            dist.broadcast(buf.data, src)
