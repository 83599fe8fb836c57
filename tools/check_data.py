"""Check every image and label file a config reads, and write clean lists (spcl/data/check.py).

    python tools/check_data.py --config configs/gta5_r101.yaml [--output DIR] [KEY VALUE …]

Checks DATASETS.SOURCE (labels required), DATASETS.TARGET (images; labels checked where present),
DATASETS.TEST (labels required) and, when DATASETS.PSEUDO_DIR is set, cityscapes_pseudo: each file
exists and reads to its end, each label has its image's size and only ids of its format. Prints a
summary table; writes into `--output` (default OUTPUT_DIR/check_data) `bad_files.txt` (`path: reason`
a line) and `clean_<dataset>.txt`, the good items as a list file for DATASETS.SOURCE_LIST /
TARGET_LIST / TEST_LIST. Exits 1 when a file is bad or a dataset is missing, 0 otherwise (count
warnings do not fail), and 2 with one line for a mistake in the command or the config. The stages run the same checks before their first iteration.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import config_parser, run_main, setup  # noqa: E402


def datasets_to_check(cfg) -> list[str]:
    """Catalog names the config reads: source, target, test, and the pseudo-label set when set."""
    d = cfg.DATASETS
    names = [d.SOURCE, d.TARGET, d.TEST] + (["cityscapes_pseudo"] if d.PSEUDO_DIR else [])
    return list(dict.fromkeys(n for n in names if n))


def format_summary(rows: list[tuple[str, object, object, object, object]]) -> str:
    """A plain text table: dataset, items, files, bad, warnings."""
    headers = ("dataset", "items", "files", "bad", "warnings")
    cells = [headers] + [tuple(str(v) for v in r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = ["  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(len(headers)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument("--output", default="", help="folder for bad_files.txt and clean lists "
                                                     "(default: OUTPUT_DIR/check_data)")
    args = parser.parse_args(argv)
    cfg = setup(args)
    from make_toy import prepare_toy_data
    from spcl.data.check import (check_dataset, dataset_for_check, default_cache_dir, fingerprint, known_size,
                                 list_key, save_cached, write_list)

    prepare_toy_data(cfg)  # configs/toy.yaml: check what training would read (a no-op when present)
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "check_data")
    os.makedirs(out_dir, exist_ok=True)
    rows, bad_lines, warnings, clean_files = [], [], [], []
    for name in datasets_to_check(cfg):
        try:
            dataset = dataset_for_check(cfg, name)
        except FileNotFoundError as e:  # a missing folder or list file: one line, no traceback
            bad_lines.append(f"{name}: {e}")
            rows.append((name, "-", "-", "missing", "-"))
            continue
        key = fingerprint(dataset, name)
        result = check_dataset(dataset, name, progress=True, expected_size=known_size(cfg, name))
        save_cached(default_cache_dir(cfg), name, key, result)  # a stage with this config starts at once
        bad_lines += result.bad_lines()
        warnings += result.warnings
        clean_path = os.path.join(out_dir, f"clean_{name}.txt")
        write_list(clean_path, result.clean)
        clean_files.append((name, clean_path, result))
        rows.append((name, result.num_items, result.num_files, len(result.bad), len(result.warnings)))

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
        for name, path, result in clean_files:
            if result.bad and list_key(cfg, name):
                print(f"clean list of {name} ({len(result.clean)} of {result.num_items} items): "
                      f"use {list_key(cfg, name)} {path}")
        return 1
    print(f"all files good; clean lists and bad_files.txt in {out_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
