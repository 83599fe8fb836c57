"""The one training loop every stage shares: seeding, DDP wrapping, poly lr, mixed precision,
logging (text, metrics.json, TensorBoard), periodic checkpoints, exact resume, target-val evaluation
and the hand-off of the stage's checkpoint. Stages (engine/stages/) differ only in `build`,
`build_loaders` and `run_step`."""
from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import resource
import time
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from spcl.data import build_dataset, build_test_loader
from spcl.evaluation import format_table, run_inference
from spcl.modeling import build_segmentor
from spcl.utils import comm
from spcl.utils.env import seed_all, write_run_info

from .checkpoint import Checkpointer
from .events import EventWriter
from .lr import poly_lr, set_lr

logger = logging.getLogger("spcl")
AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> torch.device:
    """cuda:LOCAL_RANK when a GPU is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def cpu_has_bf16_units() -> bool:
    """Whether this CPU advertises bf16 matrix instructions (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True  # unknown platform: do not warn
    return "avx512_bf16" in flags or "amx_bf16" in flags


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTrainer:
    """Base of the stage trainers.

    Subclasses set NAME (stage name) and NODE (their config section: SOURCE_ONLY, ADV_WARMUP, ALIGN,
    SELF_TRAIN), and implement:
      * `build()`: models and optimisers, registered with `register_module` / `register_optimizer`;
      * `build_loaders(start_iter)`: name → endless DataLoader, resumable at `start_iter`;
      * `run_step(batch)`: one iteration on `batch` (name → dict of tensors on the device); it calls
        `self.backward(loss)` and `self.step()` and returns scalars to log.

    Args:
        cfg: frozen config.
        output_dir: the stage's folder (checkpoints, logs, metrics).
        device: defaults to `default_device()`.
    """

    NAME = ""
    NODE = ""

    def __init__(self, cfg, output_dir: str, device: Optional[torch.device] = None):
        self.cfg, self.output_dir = cfg, output_dir
        self.scfg = cfg[self.NODE]
        self.device = device or default_device()
        self.amp_dtype = AMP_DTYPES[cfg.SOLVER.AMP]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.SOLVER.AMP == "fp16" else None
        if self.amp_dtype is not None and self.device.type == "cpu" and not cpu_has_bf16_units():
            logger.warning("SOLVER.AMP %s on a CPU without bf16/AMX matrix units runs in software and is many "
                           "times slower than fp32 (benchmarks/README.md); consider SOLVER.AMP ''", cfg.SOLVER.AMP)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.base_lrs: dict[str, float] = {}
        self.iteration = 0
        seed_all(cfg.SEED)
        if comm.is_main_process():
            os.makedirs(output_dir, exist_ok=True)
            write_run_info(cfg, output_dir)
        self.build()
        self.checkpointer = Checkpointer(os.path.join(output_dir, "checkpoints"), self.modules, self.optimizers,
                                         self.scaler, cfg.SOLVER.KEEP_CHECKPOINTS)
        self.events = EventWriter(output_dir, self.NAME, enabled=comm.is_main_process())
        self._test_loader = None

    # ----------------------------------------------------------------- building blocks for stages
    def register_module(self, name: str, module: nn.Module) -> nn.Module:
        self.modules[name] = module
        return module

    def register_optimizer(self, name: str, optimizer: torch.optim.Optimizer, base_lr: float):
        self.optimizers[name] = optimizer
        self.base_lrs[name] = base_lr
        return optimizer

    def build_model(self, freeze_bn: Optional[bool] = None) -> nn.Module:
        """The segmentor (MODEL.WEIGHTS loaded) on the device, registered as "model" and its SGD
        optimiser (head at SOLVER.HEAD_LR_FACTOR × lr). Returns the DDP-wrapped module (or itself)."""
        model = build_segmentor(self.cfg, freeze_bn=freeze_bn).to(self.device)
        self.model = self.register_module("model", model)
        sol = self.cfg.SOLVER
        opt = torch.optim.SGD(model.param_groups(self.scfg.BASE_LR, sol.HEAD_LR_FACTOR), lr=self.scfg.BASE_LR,
                              momentum=sol.MOMENTUM, weight_decay=sol.WEIGHT_DECAY)
        self.register_optimizer("model", opt, self.scfg.BASE_LR)
        return self.wrap(model, sync_bn=not (self.cfg.MODEL.FREEZE_BN if freeze_bn is None else freeze_bn))

    def wrap(self, module: nn.Module, sync_bn: bool = False) -> nn.Module:
        """DDP-wrap `module` under multi-process training (SyncBN for trainable BN on GPUs)."""
        if comm.get_world_size() == 1:
            return module
        if sync_bn and self.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def autocast(self):
        """Mixed-precision context for forward passes (SOLVER.AMP); a no-op in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers.values():
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()

    # ------------------------------------------------------------------------- stage interface
    def build(self) -> None:
        raise NotImplementedError

    def build_loaders(self, start_iter: int) -> dict:
        raise NotImplementedError

    def run_step(self, batch: dict) -> dict:
        raise NotImplementedError

    def extra_outputs(self) -> dict:
        """Files the stage hands on besides its checkpoint (name → path)."""
        return {}

    # ------------------------------------------------------------------------------- the loop
    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def train(self) -> dict:
        """Run (or resume) the stage to STOP_ITER; returns the hand-off outputs and final metrics."""
        cfg, scfg = self.cfg, self.scfg
        start = 0
        last = self.checkpointer.last_checkpoint()
        if last:
            start = self.checkpointer.resume(last)
        stop = min(scfg.STOP_ITER, scfg.MAX_ITER)
        loaders = self.build_loaders(start)
        iters = {k: iter(v) for k, v in loaders.items()}
        sol = cfg.SOLVER
        best = {"mIoU": -math.inf, "iteration": None}
        logger.info("stage %s: iterations %d → %d (poly horizon %d) on %s, %d process(es)", self.NAME, start, stop,
                    scfg.MAX_ITER, self.device, comm.get_world_size())
        for model in self.modules.values():
            model.train()
        t0, timed, meter = time.perf_counter(), 0, {}
        for it in range(start, stop):
            self.iteration = it
            batch = {k: self._to_device(next(v)) for k, v in iters.items()}
            for name, opt in self.optimizers.items():
                set_lr(opt, poly_lr(self.base_lrs[name], it, scfg.MAX_ITER, sol.LR_POWER))
            out = self.run_step(batch)
            for k, v in out.items():
                meter.setdefault(k, []).append(float(v))
            timed += 1
            done = it + 1
            if done % sol.LOG_PERIOD == 0 or done == stop:
                self._log(done, stop, meter, (time.perf_counter() - t0) / timed)
                meter = {}
            if sol.CHECKPOINT_PERIOD and done % sol.CHECKPOINT_PERIOD == 0 and done < stop:
                self.checkpointer.save(f"model_{done:07d}", done, {"stage": self.NAME, "config": cfg.dump()})
            if sol.EVAL_PERIOD and done % sol.EVAL_PERIOD == 0 and done < stop:
                self._evaluate_and_track(done, best)
        final = self.checkpointer.save("model_final", stop, {"stage": self.NAME, "config": cfg.dump()}, periodic=False)
        metrics = self._evaluate_and_track(stop, best)
        self.events.close()
        outputs = {"checkpoint": final, **self.extra_outputs()}
        result = {"outputs": outputs, "metrics": _summary(metrics), "iteration": stop}
        if cfg.PIPELINE.HANDOFF == "best":
            outputs["checkpoint"] = os.path.join(self.checkpointer.folder, "model_best.pth")
            result["oracle"] = True
            result["handoff"] = (f"best target-val checkpoint (iteration {best['iteration']}, mIoU "
                                 f"{best['mIoU']:.2f}): an ORACLE choice that uses target labels")
        return result

    def _log(self, done: int, stop: int, meter: dict, sec_per_it: float) -> None:
        means = comm.reduce_mean_dict({k: sum(v) / len(v) for k, v in meter.items()}, self._reduce_device())
        lr = self.optimizers["model"].param_groups[0]["lr"] if "model" in self.optimizers else 0.0
        eta = datetime.timedelta(seconds=int(sec_per_it * (stop - done)))
        mem = peak_memory_mb(self.device)
        text = "  ".join(f"{k}: {v:.4f}" for k, v in sorted(means.items()))
        logger.info("[%s] iter %d/%d  %s  lr: %.3g  %.2f s/it  eta: %s  peak mem: %.0f MB", self.NAME, done, stop,
                    text, lr, sec_per_it, eta, mem)
        self.events.write(done, {**means, "lr": lr, "sec_per_iter": sec_per_it, "peak_mem_mb": mem})

    def _reduce_device(self) -> torch.device:
        return self.device if (comm.is_dist() and torch.distributed.get_backend() == "nccl") else torch.device("cpu")

    def evaluate(self) -> dict:
        """mIoU of the current model on DATASETS.TEST (target val), over all processes."""
        if self._test_loader is None:
            dataset = build_dataset(self.cfg, self.cfg.DATASETS.TEST, train=False)
            self._test_loader = build_test_loader(self.cfg, dataset)
        return run_inference(self.model, self._test_loader, self.cfg.MODEL.NUM_CLASSES, self.device,
                             self.cfg.TEST.SCALES, self.cfg.TEST.FLIP, max_images=self.cfg.TEST.NUM_IMAGES,
                             amp_dtype=self.amp_dtype)

    def _evaluate_and_track(self, iteration: int, best: dict) -> dict:
        metrics = self.evaluate()
        logger.info("[%s] target val at iteration %d:\n%s", self.NAME, iteration, format_table(metrics))
        self.events.write(iteration, _summary(metrics), prefix="val/")
        if self.cfg.PIPELINE.HANDOFF == "best" and metrics["mIoU"] > best["mIoU"]:
            best.update(mIoU=metrics["mIoU"], iteration=iteration)
            self.checkpointer.save("model_best", iteration, {"stage": self.NAME, "oracle": True},
                                  periodic=False, pointer=False)
        return metrics


def _summary(metrics: dict) -> dict:
    keys = ("mIoU", "mAcc", "aAcc", "mIoU_tail", "mIoU_13", "IoU")
    return {k: metrics[k] for k in keys if k in metrics}
