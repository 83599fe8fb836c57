"""The one training loop every training stage shares: seeding, DDP wrapping, poly lr, mixed
precision, logging (text, metrics.json, TensorBoard), periodic checkpoints, exact resume, a clean
stop at an iteration boundary on SOLVER.STOP_SIGNALS (spcl.utils.signals) and target-val evaluation.
Stages (engine/stages/) differ only in `build`, `build_loaders` and `run_step`.

Set-up runs one way: the constructor seeds, creates the Checkpointer, decides whether the stage
resumes (`resume_from`), then calls the subclass's `build()`. It writes nothing to disk, and it
needs no output folder: a test or benchmark can build a stage and call `run_step` directly. Only
`train()` writes (config, environment, logs, checkpoints). The loop knows nothing about the
pipeline: what happens after an evaluation (e.g. keeping the best checkpoint) is a hook's job.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import math
import os
import signal
import time
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from spcl.config import check_drift
from spcl.data import build_dataset, build_test_loader, build_train_loader
from spcl.data.check import default_cache_dir, preflight
from spcl.evaluation import format_table, run_inference
from spcl.evaluation.sliding import sliding_from_cfg
from spcl.modeling import build_segmentor
from spcl.modeling.batchnorm import running_stats_frozen
from spcl.utils import comm
from spcl.utils.env import (AMP_DTYPES, cpu_has_bf16_units, default_device, get_rng_state, peak_memory_mb, seed_all,
                            set_rng_state, write_run_info)
from spcl.utils.io import make_folder, remove_temp_files
from spcl.utils.signals import Preempted, StopOnSignal, signal_numbers

from .checkpoint import Checkpointer
from .events import EventWriter
from .lr import poly_lr, set_lr

logger = logging.getLogger("spcl")


class StageTrainer:
    """Base of the training stages.

    Subclasses set NAME (stage name) and NODE (their config section: SOURCE_ONLY, ADV_WARMUP, ALIGN,
    SELF_TRAIN), and implement:
      * `build()`: models and optimisers (`build_model`, `register_module`, `register_optimizer`);
        `self.resume_from` tells whether a checkpoint will overwrite what is built;
      * `build_loaders(start_iter)`: name → endless DataLoader, resumable at `start_iter`
        (`source_loader` / `target_loader` build the usual ones);
      * `run_step(batch)`: one iteration on `batch` (name → dict of tensors on the device); it calls
        `self.zero_grad()`, `self.backward(loss)` and `self.step()` and returns scalars to log.

    Gradient accumulation (SOLVER.ACCUM_STEPS = k): `train_step` runs `run_step` on k micro-batches
    of the iteration; `zero_grad` acts only on the first, `backward` scales every loss by 1/k, `step`
    acts only on the last (and DDP all-reduces only in the last), so a stage's `run_step` is written
    once for both cases. Logged scalars are the means over the micro-batches.

    Hooks (`self.hooks`) are objects with `after_evaluation(trainer, iteration, metrics)`.

    Args:
        cfg: frozen config.
        output_dir: the stage's folder (checkpoints, logs, metrics); None for a trainer that is only
            stepped (tests, benchmarks): it cannot `train()`.
        device: defaults to `default_device()`.
    """

    NAME = ""
    NODE = ""

    def __init__(self, cfg, output_dir: Optional[str] = None, device: Optional[torch.device] = None):
        self.cfg, self.output_dir = cfg, output_dir
        self.scfg = cfg[self.NODE]
        self.data_record: dict = {}  # what the loaders read (`data_record`), saved in checkpoints; set by `train`
        self.device = device or default_device()
        self.amp_dtype = AMP_DTYPES[cfg.SOLVER.AMP]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.SOLVER.AMP == "fp16" else None
        self.fused: Optional[bool] = True if cfg.SOLVER.FUSED_OPTIMIZER else None  # the optimisers' `fused`
        if self.amp_dtype is not None and self.device.type == "cpu" and not cpu_has_bf16_units():
            logger.warning("SOLVER.AMP %s on a CPU without bf16/AMX matrix units runs in software and is many "
                           "times slower than fp32 (benchmarks/README.md); consider SOLVER.AMP ''", cfg.SOLVER.AMP)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.base_lrs: dict[str, float] = {}
        self.hooks: list = []
        self.iteration = 0
        self.evaluating: Optional[int] = None  # the iteration whose periodic evaluation runs, if one does
        self.accum_steps = int(cfg.SOLVER.ACCUM_STEPS)
        if self.accum_steps < 1:
            raise ValueError(f"SOLVER.ACCUM_STEPS must be >= 1, got {self.accum_steps}")
        self._micro = 0  # index of the micro-batch being run within the iteration
        seed_all(cfg.SEED)
        folder = os.path.join(output_dir, "checkpoints") if output_dir else None
        self.checkpointer = Checkpointer(folder, self.modules, self.optimizers, self.scaler,
                                         cfg.SOLVER.KEEP_CHECKPOINTS)
        # the newest readable checkpoint (a torn newer one is skipped with a warning)
        self.resume_from: Optional[str] = self.checkpointer.find_resume_checkpoint()
        self.events: Optional[EventWriter] = None
        self._test_loader = None
        self.build()

    # ----------------------------------------------------------------- building blocks for stages
    def register_module(self, name: str, module: nn.Module) -> nn.Module:
        """Save and restore `module` under `name` in every checkpoint; returns it."""
        self.modules[name] = module
        return module

    def register_optimizer(self, name: str, optimizer: torch.optim.Optimizer, base_lr: float):
        """Step `optimizer` on the poly schedule from `base_lr`, and checkpoint it under `name`."""
        self.optimizers[name] = optimizer
        self.base_lrs[name] = base_lr
        return optimizer

    def build_model(self, freeze_bn: Optional[bool] = None, find_unused: bool = False) -> None:
        """The segmentor on the device (MODEL.WEIGHTS loaded unless resuming), checkpointed as "model",
        with its SGD optimiser (head at SOLVER.HEAD_LR_FACTOR × lr). Sets `model_without_ddp` and
        `model` (the DDP-wrapped module under several processes, else the same object).
        `find_unused`: some backward pass of a step leaves parameters without gradient (DDP must
        then look for them, at a cost per step)."""
        model = build_segmentor(self.cfg, freeze_bn=freeze_bn, load_weights=self.resume_from is None)
        self.model_without_ddp = self.register_module("model", model.to(self.device))
        sol = self.cfg.SOLVER
        groups = model.param_groups(self.scfg.BASE_LR, sol.HEAD_LR_FACTOR)
        if sol.OPTIMIZER == "adamw":
            opt = torch.optim.AdamW(groups, lr=self.scfg.BASE_LR, betas=(sol.MOMENTUM, 0.999),
                                    weight_decay=sol.WEIGHT_DECAY, fused=self.fused)
        else:
            opt = torch.optim.SGD(groups, lr=self.scfg.BASE_LR, momentum=sol.MOMENTUM, weight_decay=sol.WEIGHT_DECAY,
                                  fused=self.fused)
        self.register_optimizer("model", opt, self.scfg.BASE_LR)
        self.model = self.wrap(model, sync_bn=not (self.cfg.MODEL.FREEZE_BN if freeze_bn is None else freeze_bn),
                               find_unused=find_unused)

    def source_bn_stats(self):
        """Context for the source pass of a two-domain stage: with MODEL.BN_RUNNING_STATS "target" it
        leaves the BatchNorm running statistics to the target passes (spcl/modeling/batchnorm.py)."""
        return running_stats_frozen(self.model_without_ddp, self.cfg.MODEL.BN_RUNNING_STATS == "target")

    def wrap(self, module: nn.Module, sync_bn: bool = False, find_unused: bool = False) -> nn.Module:
        """DDP-wrap `module` under multi-process training (SyncBN for trainable BN on GPUs)."""
        if comm.get_world_size() == 1:
            return module
        if sync_bn and self.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)

    def source_loader(self, start_iter: int):
        """The endless source loader (DATASETS.SOURCE, class-balanced when DATASETS.CLASS_BALANCE)."""
        cfg = self.cfg
        dataset = build_dataset(cfg, cfg.DATASETS.SOURCE, train=True, role="source")
        return build_train_loader(cfg, dataset, self.scfg.SOURCE_BATCH, start_iter, cfg.DATASETS.CLASS_BALANCE,
                                  stream="source")

    def target_loader(self, start_iter: int, name: str = "", role: Optional[str] = None):
        """The endless target loader: unlabelled DATASETS.TARGET, or `name` (e.g. cityscapes_pseudo)."""
        cfg = self.cfg
        dataset = build_dataset(cfg, name or cfg.DATASETS.TARGET, train=True, role=role or "target")
        return build_train_loader(cfg, dataset, self.scfg.TARGET_BATCH, start_iter, stream="target")

    def autocast(self):
        """Mixed-precision context for forward passes (SOLVER.AMP); a no-op in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of `loss` (÷ ACCUM_STEPS under accumulation; × the fp16 scale)."""
        if self.accum_steps > 1:
            loss = loss / self.accum_steps
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def zero_grad(self) -> None:
        """Clear the gradients (under accumulation: on the first micro-batch of the iteration only)."""
        if self._micro > 0:
            return
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One step of every optimiser (under accumulation: after the last micro-batch only)."""
        if self._micro < self.accum_steps - 1:
            return
        for opt in self.optimizers.values():
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()

    def measure_gradients(self) -> bool:
        """Whether this iteration logs diagnostic gradient norms (every SOLVER.LOG_PERIOD iterations)."""
        period = self.cfg.SOLVER.LOG_PERIOD
        return period > 0 and (self.iteration + 1) % period == 0

    def set_learning_rates(self, iteration: int) -> None:
        """Poly lr of every optimiser at `iteration` (each group at its lr_factor × the base)."""
        for name, opt in self.optimizers.items():
            set_lr(opt, poly_lr(self.base_lrs[name], iteration, self.scfg.MAX_ITER, self.cfg.SOLVER.LR_POWER))

    # ------------------------------------------------------------------------- stage interface
    def build(self) -> None:
        raise NotImplementedError

    def build_loaders(self, start_iter: int) -> dict:
        raise NotImplementedError

    def data_names(self) -> list:
        """The datasets the stage's loaders read, checked before iteration 1: (catalog name, run role) pairs
        (a name that is also the test set is checked with the list of the role it is read in)."""
        raise NotImplementedError

    def run_step(self, batch: dict) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- the loop
    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def run(self) -> dict:
        """The stage interface shared with the offline stages: train (or resume) to the end."""
        return self.train()

    def _no_sync(self):
        """DDP gradient all-reduce off (micro-batches before the last of an iteration)."""
        stack = contextlib.ExitStack()
        for attr in ("model", "discriminator"):
            module = getattr(self, attr, None)
            if isinstance(module, DistributedDataParallel):
                stack.enter_context(module.no_sync())
        return stack

    def train_step(self, micro_batches: list) -> dict:
        """One iteration on its ACCUM_STEPS micro-batches (each: name → dict of tensors on the
        device); one optimiser step. Returns the mean of each logged scalar over the micro-batches."""
        if len(micro_batches) != self.accum_steps:
            raise ValueError(f"{len(micro_batches)} micro-batches given, SOLVER.ACCUM_STEPS is {self.accum_steps}")
        sums: dict = {}
        try:
            for j, batch in enumerate(micro_batches):
                self._micro = j
                last = j == self.accum_steps - 1
                with (contextlib.nullcontext() if last else self._no_sync()):
                    logs = self.run_step(batch)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        finally:
            self._micro = 0
        return {k: v / len(micro_batches) for k, v in sums.items()}

    def train(self) -> dict:
        """Run (or resume) the stage to STOP_ITER; returns {"outputs": {"checkpoint"}, "metrics",
        "iteration"}."""
        if not self.output_dir:
            raise ValueError(f"stage {self.NAME} was built without an output folder; it can only run_step")
        cfg, scfg = self.cfg, self.scfg
        if self.resume_from:
            recorded = self.checkpointer.stored_config(self.resume_from)
            if recorded:
                check_drift(recorded, cfg, f"stage {self.NAME} in {self.output_dir} (checkpoint {self.resume_from})")
        if comm.is_main_process():
            make_folder(self.output_dir, "stage folder")
            clear_temp_files(self.output_dir, os.path.join(self.output_dir, "checkpoints"))
            write_run_info(cfg, self.output_dir, made=bool(self.resume_from))
        if cfg.DATASETS.PREFLIGHT:
            preflight(cfg, self.data_names() + [(cfg.DATASETS.TEST, "test")], default_cache_dir(cfg))
        start = self.checkpointer.resume(self.resume_from) if self.resume_from else 0
        stop = min(scfg.STOP_ITER, scfg.MAX_ITER)
        # records of an earlier attempt past the resume point (all of them for a fresh start) are dropped; a
        # stage resumed from its final checkpoint evaluates again, so that evaluation's record goes too
        self.events = EventWriter(self.output_dir, self.NAME, enabled=comm.is_main_process(),
                                  resumed_at=start if self.resume_from else -1,
                                  redo_eval=bool(self.resume_from) and start == stop)
        if start > stop:  # the checkpoint has trained further than this config asks: its weights are not that stage
            raise ValueError(f"stage {self.NAME} in {self.output_dir} resumes from iteration {start} "
                             f"({self.resume_from}), past {self.NODE}.STOP_ITER {stop}: give STOP_ITER >= {start}, or "
                             "delete the stage folder to train it again to the new length")
        rng = get_rng_state() if self.resume_from else None
        loaders = self.build_loaders(start)
        iters = {k: iter(v) for k, v in loaders.items()}  # (draws the loaders' base seeds)
        if rng is not None:  # the random state the checkpoint holds, as the uninterrupted run had it after these draws
            set_rng_state(rng)
        self.data_record = data_record(loaders)
        if self.resume_from:
            self._warn_if_data_changed()
        logger.info("stage %s: iterations %d → %d (poly horizon %d) on %s, %d process(es)", self.NAME, start, stop,
                    scfg.MAX_ITER, self.device, comm.get_world_size())
        for model in self.modules.values():
            model.train()
        try:
            with StopOnSignal(signal_numbers(cfg.SOLVER.STOP_SIGNALS)) as signals:
                self._loop(start, stop, iters, signals)
        except Preempted:
            self.events.close()  # flush TensorBoard before the process ends
            raise
        except KeyboardInterrupt:
            self.events.close()
            last = self.checkpointer.last_checkpoint()
            where = (f"the evaluation after iteration {self.evaluating}" if self.evaluating is not None
                     else f"iteration {self.iteration + 1}")
            raise KeyboardInterrupt(f"during {where} of stage {self.NAME} (last checkpoint: {last or 'none yet'})") \
                from None
        except torch.cuda.OutOfMemoryError as e:
            last = self.checkpointer.last_checkpoint()
            if self.evaluating is not None:  # the periodic evaluation: its batch is TEST.BATCH_SIZE
                raise OutOfMemory.of(
                    e, f"in the evaluation after iteration {self.evaluating} of stage {self.NAME} (last checkpoint: "
                       f"{last or 'none yet'})", "Lower TEST.BATCH_SIZE (images per forward pass), which may change on "
                       "a rerun, or use SOLVER.AMP bf16 (--allow-config-change); the rerun resumes the stage") from e
            raise OutOfMemory.of(
                e, f"in iteration {self.iteration + 1} of stage {self.NAME} (last checkpoint: {last or 'none yet'})",
                f"Lower the per-process batch ({self.NODE}.*_BATCH, or more processes), split it with "
                "SOLVER.ACCUM_STEPS k, or use SOLVER.AMP bf16 and MODEL.CHANNELS_LAST True; then rerun the same "
                "command with --allow-config-change to resume") from e
        finally:
            # the loaders' worker processes end here, not when a caller's kept exception (whose traceback holds
            # this frame) is collected, and not after the final evaluation
            iters.clear()
        self.check_finite_weights(stop)
        final = self.checkpointer.save("model_final", stop, {"stage": self.NAME, "config": cfg.dump(),
                                                             "data": self.data_record}, periodic=False)
        metrics = self.evaluate_and_log(stop)
        self.events.close()
        return {"outputs": {"checkpoint": final}, "metrics": summary_metrics(metrics), "iteration": stop}

    def _loop(self, start: int, stop: int, iters: dict, signals: Optional[StopOnSignal] = None) -> None:
        """Iterations start … stop-1: step, check, log, checkpoint, evaluate; after any of them, save and
        raise Preempted when `signals` reports a stop request."""
        sol = self.cfg.SOLVER
        t0, timed, meter = time.perf_counter(), 0, {}
        for it in range(start, stop):
            self.iteration = it
            # ACCUM_STEPS micro-batches per loader: together this process's share of the global batch
            micro = [{k: self._to_device(next(v)) for k, v in iters.items()} for _ in range(self.accum_steps)]
            self.set_learning_rates(it)
            logs = self.train_step(micro)
            done = it + 1
            self.check_finite_losses(logs, done)
            for k, v in logs.items():
                meter.setdefault(k, []).append(float(v))
            timed += 1
            if done % sol.LOG_PERIOD == 0 or done == stop:
                self.check_finite_weights(done)
                self._log(done, stop, meter, (time.perf_counter() - t0) / timed)
                meter = {}
            saved = None
            # evaluate before the save, so that the resume point holds what the evaluation decided (the best
            # checkpoint so far) and a stage killed during the evaluation evaluates that iteration again
            if sol.EVAL_PERIOD and done % sol.EVAL_PERIOD == 0 and done < stop:
                self.check_finite_weights(done)  # a diverged model is neither evaluated nor kept as the best
                self.evaluating = done
                self.evaluate_and_log(done)
                self.evaluating = None
            if sol.CHECKPOINT_PERIOD and done % sol.CHECKPOINT_PERIOD == 0 and done < stop:
                saved = self._save_resume_point(done)
            signum = signals.requested() if signals is not None else 0
            if signum:
                raise self._preempted(signum, done, saved)

    def _save_resume_point(self, done: int) -> str:
        """`model_<done>.pth` (never with non-finite weights), the checkpoint a rerun resumes from."""
        self.check_finite_weights(done)
        if self.events is not None:
            self.events.sync()  # the records up to `done` are on disk before the checkpoint that resumes after them
        return self.checkpointer.save(f"model_{done:07d}", done, {"stage": self.NAME, "config": self.cfg.dump(),
                                                                  "data": self.data_record})

    def _warn_if_data_changed(self) -> None:
        """A resume from a checkpoint whose loaders read other items (files added, removed or renamed since, the
        config unchanged) is not exact: the samples drawn from here differ from an uninterrupted run's. Said
        once, naming the loaders and their item counts; the run goes on (a repaired dataset is a reason to
        resume). A checkpoint without the record (an older one) is not compared."""
        then = self.checkpointer.resumed_data
        if not then:
            return
        changed = [f"{k} ({then[k].get('items')} items then, {v['items']} now)" for k, v in self.data_record.items()
                   if isinstance(then.get(k), dict) and then[k] != v]
        if changed:
            logger.warning("stage %s resumes from %s, but the data its loaders read changed since that checkpoint: "
                           "%s; the samples drawn from here are not those of an uninterrupted run, so this resume "
                           "is not exact", self.NAME, self.resume_from, "; ".join(changed))

    def _preempted(self, signum: int, done: int, saved: Optional[str]) -> Preempted:
        """Save the state after `done` iterations (unless the periodic save of this iteration did: `saved`)
        and say so. Every process takes the same branch (the save is a collective)."""
        path = saved if saved is not None else self._save_resume_point(done)
        name = signal.Signals(signum).name
        logger.info("stage %s: %s received; stopped after iteration %d, saved %s", self.NAME, name, done, path)
        return Preempted(f"stage {self.NAME} stopped on {name} after iteration {done}; saved {path}", signum, done,
                         path)

    def _divergence(self, what: str, iteration: int) -> "DivergenceError":
        last = self.checkpointer.last_checkpoint()
        return DivergenceError(
            f"stage {self.NAME} diverged: {what} at iteration {iteration}. Last good checkpoint: "
            f"{last or 'none yet'} (no checkpoint with non-finite weights is written). Lower the "
            f"learning rate ({self.NODE}.BASE_LR) or check the data, then rerun the same command with the new "
            "value and --allow-config-change (the lr is part of the recorded config): the stage resumes from it.")

    def check_finite_losses(self, logs: dict, iteration: int) -> None:
        """Stop on a NaN or infinite loss (every iteration: the values are already on the host)."""
        bad = {k: v for k, v in logs.items() if k.startswith("loss") and not math.isfinite(float(v))}
        if bad:
            raise self._divergence("non-finite loss " + ", ".join(f"{k} = {v}" for k, v in bad.items()), iteration)

    def check_finite_weights(self, iteration: int) -> None:
        """Stop when any registered module holds a NaN or infinite parameter or buffer (checked every
        LOG_PERIOD and before every save, so a non-finite checkpoint is never written)."""
        for name, module in self.modules.items():
            tensors = [t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()]
            if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
                raise self._divergence(f"non-finite weights in '{name}'", iteration)

    def _log(self, done: int, stop: int, meter: dict, sec_per_it: float) -> None:
        means = comm.reduce_mean_dict({k: sum(v) / len(v) for k, v in meter.items()})
        lrs = {}
        if "model" in self.optimizers:
            groups = self.optimizers["model"].param_groups
            lrs = {"lr": groups[0]["lr"], "lr_head": groups[-1]["lr"]}
        eta = datetime.timedelta(seconds=int(sec_per_it * (stop - done)))
        mem = peak_memory_mb(self.device)
        text = "  ".join(f"{k}: {v:.4g}" for k, v in sorted(means.items()))
        logger.info("[%s] iter %d/%d  %s  lr: %.3g (head %.3g)  %.2f s/it  eta: %s  peak mem: %.0f MB", self.NAME,
                    done, stop, text, lrs.get("lr", 0.0), lrs.get("lr_head", 0.0), sec_per_it, eta, mem)
        self.events.write(done, {**means, **lrs, "sec_per_iter": sec_per_it, "peak_mem_mb": mem})

    def evaluate(self) -> dict:
        """mIoU of the current model on DATASETS.TEST (target val), over all processes, every process with
        the BatchNorm statistics of process 0 (those its checkpoints hold)."""
        comm.broadcast_buffers(self.model_without_ddp)
        if self._test_loader is None:
            dataset = build_dataset(self.cfg, self.cfg.DATASETS.TEST, train=False).first(self.cfg.TEST.NUM_IMAGES)
            self._test_loader = build_test_loader(self.cfg, dataset)
        return run_inference(self.model_without_ddp, self._test_loader, self.cfg.MODEL.NUM_CLASSES, self.device,
                             self.cfg.TEST.SCALES, self.cfg.TEST.FLIP,
                             amp_dtype=self.amp_dtype, logits_fn=sliding_from_cfg(self.cfg))

    def evaluate_and_log(self, iteration: int) -> dict:
        """Evaluate, log the table and the scalars, then call every hook's `after_evaluation`."""
        metrics = self.evaluate()
        logger.info("[%s] target val at iteration %d:\n%s", self.NAME, iteration, format_table(metrics))
        if self.events is not None:
            self.events.write(iteration, summary_metrics(metrics), prefix="val/")
        for hook in self.hooks:
            hook.after_evaluation(self, iteration, metrics)
        return metrics


def data_record(loaders: dict) -> dict:
    """{loader name: {"items": N, "digest": …}} of what each training loader reads: the item count and a hash of
    its items in order, each by the last two parts of its image and label paths (a city folder and a file
    name), so that a moved dataset folder (DATASETS.DATA_DIR) records the same and a file added, removed or
    renamed does not. Kept in checkpoints to tell a resume that its data changed."""
    out = {}
    for name, loader in loaders.items():
        items = getattr(getattr(loader, "dataset", None), "items", None)
        if items is None:
            continue
        h = hashlib.sha256()
        for image, label in items:
            h.update("\t".join("/".join(os.path.normpath(p).split(os.sep)[-2:]) if p else "" for p in (image, label))
                     .encode() + b"\n")
        out[name] = {"items": len(items), "digest": h.hexdigest()[:16]}
    return out


def clear_temp_files(*folders: str) -> None:
    """Remove what writes cut short by a kill left in `folders` (temp files of up to a checkpoint's size,
    which no one else removes), saying so. Main process, under the run's lock."""
    removed = sum(remove_temp_files(f) for f in folders)
    if removed:
        logger.warning("removed %d temp file(s) in %s left by a write that a kill cut short", removed,
                       " and ".join(folders))


class DivergenceError(RuntimeError):
    """A training stage produced a non-finite loss or non-finite weights."""


class OutOfMemory(RuntimeError):
    """A stage ran out of GPU memory; the message says where and what to change."""

    @classmethod
    def of(cls, error: BaseException, where: str, what_to_change: str) -> "OutOfMemory":
        """From PyTorch's error: where it happened, PyTorch's first line (the allocation), what to change."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else "CUDA out of memory"
        return cls(f"out of GPU memory{' ' + where if where else ''}: {first} {what_to_change}")


def summary_metrics(metrics: dict) -> dict:
    """The metrics a stage reports (mIoU, mAcc, aAcc, tail / 13-class means, per-class IoU)."""
    keys = ("mIoU", "mAcc", "aAcc", "mIoU_tail", "mIoU_13", "IoU")
    return {k: metrics[k] for k in keys if k in metrics}
