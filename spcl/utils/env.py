"""Environment helpers: seeding, RNG state capture/restore, the device and hardware probes
(bf16 units, peak memory), and the environment/git description written into every output folder.

Used by the trainer (seed, RNG in checkpoints, device), the stages and the tools.
"""
from __future__ import annotations

import logging
import os
import platform
import random
import resource
import subprocess
import sys

import numpy as np
import torch

from spcl.utils import comm


AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # SOLVER.AMP → autocast dtype


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


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """RNG states of python, numpy, torch (and CUDA when present), for checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_describe() -> str:
    """Commit hash of the code (with '-dirty' for local changes), or 'unknown' outside git."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's name: the first `model name` line of `cpuinfo` (Linux), else what the platform
    reports, else "unknown"."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def collect_env() -> str:
    """A short text description of the software and hardware of this run. The CPU line names the
    processor and the instruction set PyTorch picked its CPU kernels for (e.g. AVX2, AVX512): a CPU
    run repeats to the last digit only with the same thread count on the same kind of CPU: runs of
    configs/toy.yaml differed between an AVX2 and an AVX-512 machine at one thread and at two (README,
    "What the toy run shows")."""
    lines = [
        f"python: {sys.version.split()[0]} ({platform.platform()})",
        f"torch: {torch.__version__}, cuda available: {torch.cuda.is_available()}",
        f"threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}",
        f"processes: {comm.get_world_size()}",
        f"cpu: {cpu_model()}, torch cpu capability: {torch.backends.cpu.get_cpu_capability()}",
        f"numpy: {np.__version__}",
        f"git: {git_describe()}",
        f"command: {' '.join(sys.argv)}",
    ]
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}")
    try:
        import torchvision
        lines.append(f"torchvision: {torchvision.__version__}")
    except ImportError:  # pragma: no cover
        pass
    return "\n".join(lines) + "\n"


def recorded_count(env_path: str, key: str) -> int | None:
    """The number after `key:` in the last run recorded in `env_path` (its last `key: N` line), or None (no
    file, or a record from before that line was written)."""
    if not os.path.isfile(env_path):
        return None
    found = None
    with open(env_path, errors="replace") as f:  # a record for people: damaged bytes cost only their lines
        for line in f:
            if line.startswith(f"{key}: "):
                try:
                    found = int(line.split()[1].rstrip(","))
                except (IndexError, ValueError):
                    found = None
    return found


def recorded_threads(env_path: str) -> int | None:
    """The torch thread count of the last run recorded in `env_path` (its last `threads:` line), or None."""
    return recorded_count(env_path, "threads")


def _warn_changes(env_path: str) -> None:
    """Warn when a run continues in a folder with another number of processes, or on the CPU another
    torch thread count, than its last run. Its result will then not equal an uninterrupted run's:
    * CPU kernels sum in an order that depends on the thread count (on configs/toy_256.yaml seed 0,
      warm-up at one thread vs two ended 41.73 vs 40.71 mIoU);
    * each process reads its own share of the images, so another count gives every process other batches
      (resumed 2 → 1 processes, align's weights differed from both uninterrupted runs)."""
    log = logging.getLogger("spcl")
    before, now = recorded_threads(env_path), torch.get_num_threads()
    if before is not None and before != now and not torch.cuda.is_available():
        log.warning("%s: this run uses %d torch thread(s), the run recorded there used %d; on the CPU the results "
                    "then differ from an uninterrupted run (set OMP_NUM_THREADS=%d to repeat it exactly)",
                    env_path, now, before, before)
    before, now = recorded_count(env_path, "processes"), comm.get_world_size()
    if before is not None and before != now:
        log.warning("%s: this run uses %d process(es), the run recorded there used %d; each process reads other "
                    "images then, so the results differ from an uninterrupted run (run it with %d process(es), "
                    "e.g. torchrun --nproc_per_node=%d, to repeat it exactly)", env_path, now, before, before, before)


def moved_from(recorded: str, cfg) -> str | None:
    """Where the run folder was when `recorded` (a config's YAML text) was written, if `cfg` is the same
    config apart from that: OUTPUT_DIR may differ, and hand-off paths inside the run folder must name the
    same file relative to it (spcl.config.drift, RUN_PATHS). "" when nothing differs at all, None when
    anything else does (another value, even of a key a rerun may change, such as SOLVER.LOG_PERIOD)."""
    import yaml

    from spcl.config.drift import RUN_PATHS, flatten, config_drift

    if recorded == cfg.dump():
        return ""
    try:
        old = yaml.safe_load(recorded)
    except (yaml.YAMLError, ValueError):
        return None
    if not isinstance(old, dict):
        return None
    before, now = dict(flatten(old)), dict(flatten(yaml.safe_load(cfg.dump())))
    differ = {k for k in set(before) | set(now) if repr(before.get(k)) != repr(now.get(k))}
    if not differ <= {"OUTPUT_DIR", *RUN_PATHS} or any(k in RUN_PATHS for k, _, _ in config_drift(old, cfg)):
        return None
    return str(before.get("OUTPUT_DIR", "")) if "OUTPUT_DIR" in differ else ""


def _newest_record(output_dir: str) -> str:
    """The config a rerun continues from: the newest of `config.yaml` and the `config_<time>.yaml` an allowed
    change wrote (an unused `config_unused_<time>.yaml` aside), so a rerun with that change records it once."""
    names = [f for f in os.listdir(output_dir) if f == "config.yaml" or
             (f.startswith("config_") and f.endswith(".yaml") and not f.startswith("config_unused_"))]
    paths = [os.path.join(output_dir, f) for f in names]
    return max(paths, key=lambda p: (os.path.getmtime(p), p))


def write_run_info(cfg, output_dir: str, made: bool = True) -> str:
    """Record the run in `output_dir` (main process only, by the caller), never rewriting an earlier
    record: `config.yaml` + `env.txt` the first time; on a rerun with the same config a note is
    appended to `env.txt`; with another config (allowed by the caller) the new one is written as
    `config_<time>.yaml` beside the original. A run folder moved or copied elsewhere keeps its config
    (`moved_from`: only OUTPUT_DIR and the hand-off paths inside it differ): the note names the old place.
    A rerun is compared with the newest record, so a changed config is written once, not at every rerun.
    `made`: whether the folder holds anything made with the recorded config (a checkpoint, a finished stage);
    if not, another config takes `config.yaml`, the unused one is kept as `config_unused_<time>.yaml`, so
    `config.yaml` is what made the results. Returns the path of the config written or matched."""
    import datetime

    from spcl.config import dump_config

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "config.yaml")
    env_path = os.path.join(output_dir, "env.txt")
    if not os.path.isfile(path):
        dump_config(cfg, output_dir)
        with open(env_path, "w") as f:
            f.write(collect_env())
        return path
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    _warn_changes(env_path)
    newest = _newest_record(output_dir)
    with open(newest) as f:
        moved = moved_from(f.read(), cfg)
    same = moved is not None
    path = newest if same else path
    note = f", in this folder moved or copied from {moved}" if moved else ""
    if not same and not made:
        unused = os.path.join(output_dir, f"config_unused_{stamp}.yaml")
        os.replace(path, unused)
        dump_config(cfg, output_dir)
        note = (f", with another config in config.yaml: nothing made with the earlier one is kept, its config is "
                f"now {os.path.basename(unused)}")
    elif not same:
        path = dump_config(cfg, output_dir, f"config_{stamp}.yaml")
        note = f", with the config of {os.path.basename(path)}"
    with open(env_path, "a") as f:
        f.write(f"\n--- rerun at {stamp}{note} ---\n" + collect_env())
    return path
