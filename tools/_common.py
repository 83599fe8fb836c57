"""Argument parsing and set-up shared by the tools: `--config`, `KEY VALUE` overrides, the process
group, and making the repository importable when it is not installed."""
from __future__ import annotations

import argparse
import os
import sys

try:
    import spcl  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="", metavar="FILE", help="experiment YAML (configs/…)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. OUTPUT_DIR output/x SOLVER.AMP bf16")
    return parser


def setup(args, output_dir_override: str = ""):
    """Process group, merged frozen config and logger; returns the config."""
    from spcl.config import load_config
    from spcl.engine import init_distributed
    from spcl.utils.logger import setup_logger

    init_distributed()
    opts = list(args.opts)
    if opts and opts[0] == "--":
        opts = opts[1:]
    if output_dir_override:
        opts += ["OUTPUT_DIR", output_dir_override]
    cfg = load_config(args.config, opts)
    setup_logger(cfg.OUTPUT_DIR)
    return cfg
