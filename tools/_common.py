"""Argument parsing and set-up shared by the tools: `--config`, `KEY VALUE` overrides, `--debug`,
the process group, one-line errors for mistakes a user can make, and making the repository
importable when it is not installed."""
from __future__ import annotations

import argparse
import os
import sys

try:
    import spcl  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_parser(doc: str, config_required: bool = False) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of `doc` and whose epilog is the rest
    (shown whole by --help), with --config, --debug and trailing KEY VALUE overrides."""
    head, _, rest = doc.strip().partition("\n\n")
    parser = argparse.ArgumentParser(description=" ".join(head.split()), epilog=rest or None,
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
    from spcl.utils.logger import setup_logger

    opts = list(args.opts)
    if opts and opts[0] == "--":
        opts = opts[1:]
    flags = [o for o in opts if o.startswith("--")]
    if flags:
        raise UsageError(f"flag {flags[0]} comes after the KEY VALUE overrides; put every flag first, "
                         f"e.g. `… {flags[0]} … KEY VALUE`")
    init_distributed()
    if output_dir_override:
        opts += ["OUTPUT_DIR", output_dir_override]
    cfg = load_config(args.config, opts)
    if os.path.exists(cfg.OUTPUT_DIR) and not os.path.isdir(cfg.OUTPUT_DIR):
        raise UsageError(f"OUTPUT_DIR {cfg.OUTPUT_DIR} is a file, not a folder: give a folder for the run's outputs")
    setup_logger(cfg.OUTPUT_DIR)
    return cfg


class UsageError(ValueError):
    """A mistake on the command line."""


def user_errors() -> tuple:
    """Exceptions that are a user's to fix: printed as one line (the traceback with --debug)."""
    import torch

    from spcl.config import ConfigDriftError
    from spcl.engine.trainer import DivergenceError, OutOfMemory

    return (FileNotFoundError, KeyError, ValueError, OSError, ConfigDriftError, DivergenceError, OutOfMemory,
            UsageError, torch.cuda.OutOfMemoryError)


def run_main(main, argv=None) -> None:
    """Run a tool's `main(argv)`: known user errors print one line and exit 2, Ctrl-C exits 130 with
    how to resume, a stage stopped by a signal (SOLVER.STOP_SIGNALS) exits 128 + its number, as if the
    signal had ended the process, with where it saved; `--debug` shows tracebacks instead."""
    from spcl.utils.signals import Preempted

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    name = os.path.basename(sys.argv[0]) or "spcl"
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
        print(f"{name}: interrupted{where}; rerun the same command to resume (finished stages are skipped, "
              "the interrupted one continues from its last checkpoint)", file=sys.stderr)
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
        print(f"{name}: error: {message}\n(run with --debug for the full traceback)", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
