"""Train: the whole SPCL pipeline (warm-up → prototypes → pseudo labels → align → pseudo labels →
self-train), or one stage with `--stage`.

    python tools/train.py --config configs/gta5_r101.yaml [KEY VALUE …]
    torchrun --nproc_per_node=4 tools/train.py --config configs/gta5_r101.yaml
    python tools/train.py --config configs/gta5_r101.yaml --stage align \
        MODEL.WEIGHTS warmup.pth PROTOTYPE.PATH prototypes.pth DATASETS.PSEUDO_DIR labels/

Running the same command again skips finished stages and resumes the interrupted one.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import config_parser, setup  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__.splitlines()[0])
    parser.add_argument("--stage", default="", help="run only this stage, in OUTPUT_DIR/<stage>")
    args = parser.parse_args(argv)
    cfg = setup(args)
    from make_toy import prepare_toy_data
    from spcl.engine import run_pipeline, run_stage
    from spcl.engine.pipeline import format_summary
    from spcl.utils import comm

    prepare_toy_data(cfg)  # configs/toy.yaml: the generated demo data, written on first use
    if args.stage:
        result = run_stage(cfg, args.stage, os.path.join(cfg.OUTPUT_DIR, args.stage))
        if comm.is_main_process():
            print(format_summary([{"stage": args.stage, **result["metrics"]}]))
    else:
        run_pipeline(cfg)


if __name__ == "__main__":
    main()
