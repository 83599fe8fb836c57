"""Shared helpers of the benchmark scripts: import path, threads, timing, peak memory, isolated worker
processes, the machine description, tables and the JSON results.

Peak memory on the CPU. torch's CPU allocations are invisible to `tracemalloc`, so memory is read
from the kernel: the resident set (`VmRSS`) and its high-water mark (`VmHWM`, the same number as
`ru_maxrss`) of /proc/self/status. Each measured variant runs in a fresh subprocess (no allocator
state, cache or high-water mark left by another variant); inside it the inputs are built, the
high-water mark is reset to the current resident set by writing "5" to /proc/self/clear_refs
(Linux ≥ 4.0), and the measured region's peak is `VmHWM − VmRSS(before)`: the memory the region
needed above its inputs. Where clear_refs cannot be written, the fresh process's `ru_maxrss` before
and after the region is used instead (inputs are built in place so they leave no higher mark).
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")

import torch  # noqa: E402  (after the path set-up)


# ------------------------------------------------------------------------------------ threads
def set_threads(n: int) -> None:
    """Intra-op threads for torch (and OpenMP/MKL through the environment of worker processes)."""
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)


# ------------------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def hwm_mb() -> float:
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset this process's peak resident set to its current one; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """`with PeakMemory() as m: …` → `m.peak_mb`: peak resident memory of the block above the
    resident memory at its start (see the module docstring)."""

    def __enter__(self):
        self.method = "clear_refs" if reset_peak() else "ru_maxrss"
        self.start_rss = rss_mb()
        self.start_hwm = hwm_mb()
        return self

    def __exit__(self, *exc):
        end_hwm = hwm_mb()
        base = self.start_rss if self.method == "clear_refs" else self.start_hwm
        self.peak_mb = max(0.0, end_hwm - base)
        self.end_rss_mb = rss_mb() - self.start_rss
        return False


# ------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], object], reps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `reps` calls of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


# ---------------------------------------------------------------------------- worker processes
def run_worker(script: str, task: dict, threads: int, timeout: float = 3600) -> dict:
    """Run `python script --worker JSON` in a fresh process; returns the JSON its last line prints."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=REPO_ROOT)
    cmd = [sys.executable, script, "--worker", json.dumps(task), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker {task} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def worker_main(handlers: dict[str, Callable[[dict], dict]]) -> bool:
    """In a script's `__main__`: when called with --worker, run the task and print its JSON; True if
    this process was a worker (the script should then exit)."""
    if "--worker" not in sys.argv:
        return False
    task = json.loads(sys.argv[sys.argv.index("--worker") + 1])
    if "--threads" in sys.argv:
        set_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
    print(json.dumps(handlers[task["kind"]](task)), flush=True)
    return True


# ------------------------------------------------------------------------------------ machine
def machine_info(threads: int) -> dict:
    """CPU model, cores, the vector and bf16 features torch uses, versions and the thread count."""
    model, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else model
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(m.group(1).split()) if m else set()
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    return {
        "cpu": model, "logical_cpus": os.cpu_count(), "memory_gb": round(mem_gb, 1),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512": any(f.startswith("avx512") for f in flags),
        "bf16_hw": bool({"avx512_bf16", "amx_bf16"} & flags),
        "torch": torch.__version__, "python": platform.python_version(), "threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# ------------------------------------------------------------------------------ tables, JSON
def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into the README)."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:,.2f}"
        return str(v)
    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in body])


def write_results(name: str, payload: dict, quick: bool) -> str:
    """benchmarks/results/<name>.json (<name>.quick.json for --quick runs, which never overwrite the
    full-size results)."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}{'.quick' if quick else ''}.json")
    write_json(path, payload, indent=2, default=float)
    return path


def write_json(path: str, payload: dict, indent: int = 2, default=float) -> None:
    """`payload` at `path` as standard JSON: NaN and ±infinity (a per-class IoU of an absent class, a loss
    statistic of an empty window) as null, which JavaScript, Go and Rust parsers accept where they reject
    Python's bare `NaN`; readers take null back as NaN (`spcl.utils.io.number`). `default` turns any other
    object into something JSON holds, as `json.dump`'s does."""
    from spcl.utils.io import json_safe

    plain = json.loads(json.dumps(payload, default=default))  # Python's json reads its own NaN back
    with open(path, "w") as f:
        json.dump(json_safe(plain), f, indent=indent, allow_nan=False)
        f.write("\n")


def base_parser(description: str):
    import argparse
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny smoke-size run")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: the machine is shared; ratios are stabler)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (median reported)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p
