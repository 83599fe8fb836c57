"""Argument parsing and set-up shared by the tools: `--config`, `KEY VALUE` overrides, `--debug`,
the process group, one-line errors for mistakes a user can make, and making the repository
importable when it is not installed."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional

try:
    import spcl  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")


def is_override_key(token: str) -> bool:
    """Whether a command-line token is a config key starting the KEY VALUE overrides: dotted
    (`DATASETS.DATA_DIR`, a typo included, which the config then names) or a top-level key of the config
    (`SEED`, `OUTPUT_DIR`), and no file of that name; a value such as `SPCL` or `photos` is not."""
    from spcl.config import get_cfg

    if not CONFIG_KEY.match(token) or os.path.exists(token):
        return False
    return "." in token or token in {k for k, v in get_cfg().items() if not isinstance(v, dict)}


def mark_overrides(argv: list, arity: Optional[dict] = None) -> list:
    """`argv` with `--` before its first config key, so that a flag taking several values
    (`--scales 0.75 1.25 KEY VALUE`) ends there instead of swallowing the overrides. `arity`: the number of
    values of each flag that takes a fixed number (`--output`: 1); those values are never keys."""
    arity = arity or {}
    skip = 0
    for i, token in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if token == "--":
            return argv
        if token in arity:
            skip = arity[token]
        elif is_override_key(token):
            return argv[:i] + ["--"] + argv[i:]
    return argv


class _OverridesParser(argparse.ArgumentParser):
    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        arity = {flag: 1 if action.nargs is None else action.nargs for action in self._actions
                 for flag in action.option_strings if action.nargs is None or isinstance(action.nargs, int)}
        args = mark_overrides(args, arity)
        late = [a for a in args[args.index("--") + 1:] if a.split("=")[0] in self._option_string_actions] \
            if "--" in args else []
        if late:  # before argparse, which would call a required flag given there missing
            raise flag_after_overrides(late[0].split("=")[0])
        return super().parse_known_args(args, namespace)


def flag_after_overrides(flag: str) -> "UsageError":
    return UsageError(f"flag {flag} comes after the KEY VALUE overrides; put every flag first, e.g. `… {flag} … "
                      "KEY VALUE`")


def scale_factor(text: str) -> float:
    """argparse type of `--scales`: a finite factor > 0 (NaN used to fail later as 'cannot convert float NaN to
    integer', naming no flag)."""
    import math

    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive factor of INPUT.TEST_SIZE")
    return value


def config_parser(doc: str, config_required: bool = False) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of `doc` and whose epilog is the rest
    (shown whole by --help), with --config, --debug and trailing KEY VALUE overrides (which also end a
    flag of several values: `--scales 0.75 1.25 TEST.FLIP True`)."""
    head, _, rest = doc.strip().partition("\n\n")
    parser = _OverridesParser(description=" ".join(head.split()), epilog=rest or None,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=config_required, default="", metavar="FILE",
                        help="experiment YAML (configs/…)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides after every flag, e.g. OUTPUT_DIR output/x SOLVER.AMP bf16")
    return parser


def setup(args, output_dir_override: str = ""):
    """Process group, merged frozen config and logger; returns the config."""
    from spcl.config import load_config
    from spcl.engine import init_distributed
    from spcl.utils.io import folder_blocked, folder_unwritable
    from spcl.utils.logger import setup_logger

    opts = list(args.opts)
    if opts and opts[0] == "--":
        opts = opts[1:]
    flags = [o for o in opts if o.startswith("--")]
    if flags:
        raise flag_after_overrides(flags[0])
    init_distributed()
    if output_dir_override:
        opts += ["OUTPUT_DIR", output_dir_override]
    cfg = load_config(args.config, opts)
    name = "--output" if output_dir_override else "OUTPUT_DIR"  # as typed
    blocked = folder_blocked(cfg.OUTPUT_DIR, name) or folder_unwritable(cfg.OUTPUT_DIR, name)
    if blocked:  # before anything runs (the toy data, a data check): a run used to stop at its first write
        raise UsageError(blocked)
    setup_logger(cfg.OUTPUT_DIR)
    return cfg


class UsageError(ValueError):
    """A mistake on the command line."""


def refuse_a_run_folder(folder: str, flag: str) -> None:
    """A pipeline run's folder, or one of its stage folders, is not an output for another tool: the tool's
    config would replace or sit beside the one the run records (its rerun would then be refused as a
    config change), and a stage's labels or prototypes would be replaced under the record of what made
    them, after the stages that followed were made from the old ones."""
    from spcl.engine.pipeline import stage_records as records

    if records(folder):
        raise ValueError(f"{flag} {folder} is a stage folder of a pipeline run (it holds {records(folder)[0]}): "
                         f"writing there would replace what the run recorded and made its later stages from; give "
                         f"another {flag} (to redo that stage, delete the folder and rerun the pipeline)")
    stages = sorted(d for d in (os.listdir(folder) if os.path.isdir(folder) else ())
                    if re.fullmatch(r"\d+_[a-z_]+", d) and records(os.path.join(folder, d)))
    if stages or os.path.isfile(os.path.join(folder, "summary.json")):
        held = f"its stage folder {stages[0]}" if stages else "summary.json"
        raise ValueError(f"{flag} {folder} is the folder of a pipeline run (it holds {held}): this tool's config "
                         f"would be recorded over the run's, and the run could not be resumed; give another {flag}")


def user_errors() -> tuple:
    """Exceptions that are a user's to fix: printed as one line (the traceback with --debug)."""
    import torch

    from spcl.config import ConfigDriftError
    from spcl.engine.trainer import DivergenceError, OutOfMemory

    return (FileNotFoundError, KeyError, ValueError, OSError, ConfigDriftError, DivergenceError, OutOfMemory,
            UsageError, torch.cuda.OutOfMemoryError)


# What gloo, NCCL and the TCP store raise in a process whose peer has died: its own error says nothing.
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing", "Broken pipe",
             "remote process exited")


def process_of() -> tuple:
    """(rank, world size) of this process, from the environment torchrun sets; (0, 1) without it."""
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)


def lost_a_peer(e: BaseException) -> bool:
    """Whether `e` is a collective failing because another process of the run died (several processes only)."""
    import torch.distributed as dist

    if process_of()[1] < 2 or not isinstance(e, RuntimeError):
        return False
    return isinstance(e, getattr(dist, "DistNetworkError", ())) or any(s in str(e) for s in PEER_GONE)


def tell_torchrun(message: str) -> None:
    """Write `message` to torchrun's error file for this process (TORCHELASTIC_ERROR_FILE), so that its
    closing "Root Cause" report shows the error instead of "error_file: <N/A>"."""
    import json
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    record = {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}
    try:
        with open(path, "w") as f:  # the layout of torch.distributed.elastic's own ErrorHandler.record_exception
            json.dump({"message": record}, f)
    except OSError:
        pass  # the report loses its text, the error itself is printed anyway


# What a tool says to do after Ctrl-C: tools that resume say how (RESUMES_RUN, RESUMES_PASS); the others
# (test.py, infer.py, analyze.py, ...) redo their work on a rerun, and say so.
STARTS_OVER = "rerun the same command to start it again (this tool does not resume)"
RESUMES_RUN = ("rerun the same command to resume (finished stages are skipped, the interrupted one continues "
               "from its last checkpoint)")
RESUMES_PASS = ("rerun the same command to resume (the predictions and sums already made with the same model "
                "and config are reused)")


def run_main(main, argv=None, on_interrupt: str = STARTS_OVER) -> None:
    """Run a tool's `main(argv)`: known user errors print one line and exit 2, Ctrl-C exits 130 with
    what to do next (`on_interrupt`), a stage stopped by a signal (SOLVER.STOP_SIGNALS) exits 128 + its number, as if the
    signal had ended the process, with where it saved; `--debug` shows tracebacks instead.

    Under torchrun an error names its process, goes into torchrun's closing report too, and a process
    that only lost a peer (its collective failed because another process died) says so in one line
    (exit 1) instead of a traceback that would bury the first process's error."""
    from spcl.utils.signals import Preempted

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    name = os.path.basename(sys.argv[0]) or "spcl"
    rank, world = process_of()
    who = f" (process {rank} of {world})" if world > 1 else ""
    try:
        code = main(argv)
    except Preempted as e:
        if debug:
            raise
        print(f"{name}: {e}; rerun the same command to resume from there", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt as e:
        if debug:
            raise
        where = f" {e}" if str(e) else ""
        print(f"{name}: interrupted{where}; {on_interrupt}", file=sys.stderr)
        sys.exit(130)
    except user_errors() as e:
        if debug:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        import torch

        if isinstance(e, torch.cuda.OutOfMemoryError):  # PyTorch's, outside a stage (test.py, infer.py, …)
            from spcl.engine.trainer import OutOfMemory
            message = str(OutOfMemory.of(e, "", "Lower the batch (TEST.BATCH_SIZE, --batch-size) or use "
                                                "SOLVER.AMP bf16"))
        print(f"{name}: error{who}: {message}\n(run with --debug for the full traceback)", file=sys.stderr)
        tell_torchrun(f"{name}: error{who}: {message}")
        sys.exit(2)
    except Exception as e:
        if lost_a_peer(e) and not debug:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            # gloo: "[…/pair.cc:561] Connection closed by peer [addr]. This is typically caused by …"
            first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]
            print(f"{name}: process {rank} of {world} stopped because another process of the run failed or was "
                  f"killed ({first}); its error, if it could print one, is above, and torchrun's \"Root Cause\" "
                  "report names it (--debug shows this traceback)", file=sys.stderr)
            sys.exit(1)
        if world > 1 and not lost_a_peer(e):
            import traceback

            tell_torchrun(f"{name}: process {rank} of {world} failed:\n" + traceback.format_exc())
        raise
    sys.exit(code if isinstance(code, int) else 0)
