"""Build the per-class file index of a source dataset for class-balanced sampling (docs/method.md "Datasets").

    python tools/prepare_data.py --config configs/gta5_r101.yaml [--output FILE] [KEY VALUE …]

Reads every label file of DATASETS.SOURCE once (progress bar) and writes
`{"num_classes": K, "dataset": name, "files": {image file name: [train labels present]}}` to
DATASETS.CLASS_INDEX (default `<DATA_DIR>/<source>_class_index.json`). It logs to the console only:
it is not a training run and writes nothing into OUTPUT_DIR.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import config_parser, run_main, setup  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--output", default="", help="index file (default: DATASETS.CLASS_INDEX or its default)")
    args = parser.parse_args(argv)
    cfg = setup(args)
    from spcl.utils.logger import setup_logger

    setup_logger("")  # console only: no log.txt in OUTPUT_DIR (a training run's folder)
    from spcl.data import build_dataset
    from spcl.data.build import class_index_path
    from spcl.data.class_index import write_class_index

    dataset = build_dataset(cfg, cfg.DATASETS.SOURCE, train=False, list_for="source")  # SOURCE_LIST, whatever TEST
    out = args.output or class_index_path(cfg)
    write_class_index(dataset, out, cfg.MODEL.NUM_CLASSES, cfg.DATASETS.SOURCE)
    print(f"class index of {len(dataset)} files written to {out}")


if __name__ == "__main__":
    run_main(main)
