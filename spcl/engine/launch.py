"""Process-group set-up for `torchrun` (env:// variables) and `torch.multiprocessing.spawn`, and a
one-process fallback: NCCL on GPUs, gloo on the CPU."""
from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from spcl.utils.signals import end_with_parent


def init_distributed(backend: Optional[str] = None) -> bool:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1).

    `backend` None picks NCCL when CUDA is available (one GPU per process, GPU LOCAL_RANK), else gloo;
    "gloo" keeps a multi-process run on the CPU of a GPU machine (the caller puts its tensors there).
    Returns True when a multi-process group is active. A process started by torchrun stops (SIGTERM: it
    saves and ends as on a scheduler's signal) when torchrun ends, instead of running on unseen.
    """
    if "TORCHELASTIC_RUN_ID" in os.environ:
        end_with_parent(signal.SIGTERM)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= gpus:
            raise ValueError(
                f"process LOCAL_RANK={local_rank} has no GPU of its own: {gpus} CUDA device(s) visible, and NCCL "
                f"needs one per process. Start at most {gpus} process(es) per node (torchrun --nproc_per_node="
                f"{gpus}), or run on the CPU with gloo (CUDA_VISIBLE_DEVICES='' torchrun ...)")
        torch.cuda.set_device(local_rank)
    timeout = timedelta(minutes=60)
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))  # what init_method="env://" does
    store.set_timeout(timeout)
    # each torchrun attempt (--max-restarts) in its own key space: the store outlives a failed attempt, and
    # without the prefix the restarted processes read the dead ones' gloo addresses ("connectFullMesh failed …
    # Connection refused")
    store = dist.PrefixStore(f"spcl/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return True


def _worker(local_rank: int, fn, world_size: int, port: int, args: tuple, backend: Optional[str] = None) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    init_distributed(backend)
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(fn, num_processes: int = 1, args: tuple = (), port: int = 0, backend: Optional[str] = None) -> None:
    """Run `fn(*args)` in `num_processes` processes on this machine (spawn), or directly for 1.
    `backend` as in `init_distributed` ("gloo" for CPU processes on a machine that has GPUs)."""
    if num_processes <= 1:
        fn(*args)
        return
    if not port:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(fn, num_processes, port, args, backend), nprocs=num_processes)
