"""Check every image and label file a config reads, and write clean lists (spcl/data/check.py).

    python tools/check_data.py --config configs/gta5_r101.yaml [--output DIR] [KEY VALUE …]

Checks DATASETS.SOURCE (labels required), DATASETS.TARGET (images; labels checked where present),
DATASETS.TEST (labels required) and, when DATASETS.PSEUDO_DIR is set, cityscapes_pseudo: each file
exists and reads to its end, each label has its image's size and only ids of its format. A dataset
named in two roles is checked in each, with that role's list file (each distinct list once; the second
as `<dataset> (as <role>)`). Prints a summary table; writes into `--output` (default
OUTPUT_DIR/check_data) `bad_files.txt` (`path: reason` a line) and `clean_<dataset>.txt`
(`clean_<dataset>.<role>.txt` for a second role), the good items as a list file for
DATASETS.SOURCE_LIST / TARGET_LIST / TEST_LIST. A file bad in two roles' lists is one line; so is a
DATASETS.FOLDER.ID_MAP that maps none of the values its label files hold (every pixel ignored). Exits 1 when
a file is bad or a dataset is missing, 0 otherwise (count warnings do not fail), and 2 with one line for a
mistake in the command or the config. The stages run the same checks before their first iteration.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import config_parser, run_main, setup  # noqa: E402


def datasets_to_check(cfg) -> list[str]:
    """Catalog names the config reads: source, target, test, and the pseudo-label set when set."""
    d = cfg.DATASETS
    names = [d.SOURCE, d.TARGET, d.TEST] + (["cityscapes_pseudo"] if d.PSEUDO_DIR else [])
    return list(dict.fromkeys(n for n in names if n))


def units_to_check(cfg) -> list[tuple[str, str]]:
    """(catalog name, run role) of every check the config needs: each dataset in every role it has in the
    run, each distinct list file and label mode once (`spcl.data.check.check_units`)."""
    from spcl.data.check import check_units

    return check_units(cfg, datasets_to_check(cfg))


def format_summary(rows: list[tuple[str, object, object, object, object]]) -> str:
    """A plain text table: dataset, items, files, bad, warnings."""
    headers = ("dataset", "items", "files", "bad", "warnings")
    cells = [headers] + [tuple(str(v) for v in r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(headers)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_unit(cfg, name: str, role: str, out_dir: str) -> tuple[tuple, list, list, Optional[tuple]]:
    """Check dataset `name` as run role `role` reads it and write its clean list into `out_dir`; returns (its
    summary row, its bad lines, its warnings, (path of the clean list, CheckResult) or None when it is missing)."""
    from spcl.data.check import (check_dataset, clean_list_name, dataset_for_check, default_cache_dir, fingerprint,
                                 known_size, save_cached, unit_label, write_list)

    label = unit_label(cfg, name, role)  # `name`, or `name (as test)` for its second role
    try:
        dataset = dataset_for_check(cfg, name, role or None)
    except FileNotFoundError as e:  # a missing folder or list file: one line, no traceback
        return (label, "-", "-", "missing", "-"), [f"{label}: {e}"], [], None
    key = fingerprint(dataset, name)
    result = check_dataset(dataset, label, progress=True, expected_size=known_size(cfg, name, role or None))
    save_cached(default_cache_dir(cfg), label, key, result)  # a stage with this config starts at once
    clean_path = os.path.join(out_dir, clean_list_name(label))
    write_list(clean_path, result.clean)
    row = (label, result.num_items, result.num_files, len(result.bad) + len(result.errors), len(result.warnings))
    return row, result.error_lines() + result.bad_lines(), list(result.warnings), (clean_path, result)


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument("--output", default="", help="folder for bad_files.txt and clean lists "
                                                     "(default: OUTPUT_DIR/check_data); the check's cache goes to "
                                                     "OUTPUT_DIR/data_check_cache either way, where a run with "
                                                     "this config reuses it")
    args = parser.parse_args(argv)
    cfg = setup(args)
    from make_toy import prepare_toy_data
    from spcl.data.check import list_key, unit_label
    from spcl.utils.io import make_folder

    prepare_toy_data(cfg)  # configs/toy.yaml: check what training would read (a no-op when present)
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "check_data")
    make_folder(out_dir, "--output" if args.output else "OUTPUT_DIR/check_data")
    rows, bad_lines, warnings, clean_files = [], [], [], []
    for name, role in units_to_check(cfg):
        row, bad, warned, clean = check_unit(cfg, name, role, out_dir)
        rows.append(row)
        bad_lines += bad
        warnings += warned
        if clean is not None:
            clean_files.append((name, role, *clean))

    bad_lines = list(dict.fromkeys(bad_lines))  # a file bad in two roles' lists: one line
    with open(os.path.join(out_dir, "bad_files.txt"), "w") as f:
        f.writelines(line + "\n" for line in bad_lines)
    print(format_summary(rows))
    for w in warnings:
        print(f"warning: {w}")
    if bad_lines:
        print(f"\n{len(bad_lines)} problem(s); first ones:")
        for line in bad_lines[:10]:
            print(f"  {line}")
        print(f"all in {os.path.join(out_dir, 'bad_files.txt')}")
        for name, role, path, result in clean_files:  # a clean list helps with bad files, not a dataset's error
            if result.bad and list_key(cfg, name, role or None):
                print(f"clean list of {unit_label(cfg, name, role)} ({len(result.clean)} of {result.num_items} "
                      f"items): use {list_key(cfg, name, role or None)} {path}")
        return 1
    print(f"all files good; clean lists and bad_files.txt in {out_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
