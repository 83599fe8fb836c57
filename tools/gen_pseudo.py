"""Write pseudo labels (paper Eq. 5; docs/method.md "Pseudo labels") for the target training set with a checkpoint, or compute the
source prototypes (paper Eq. 2; docs/method.md "Prototypes") with `--prototypes`.

    python tools/gen_pseudo.py --config configs/gta5_r101.yaml --checkpoint C --output DIR [KEY VALUE …]
    python tools/gen_pseudo.py --config configs/gta5_r101.yaml --checkpoint C --output DIR --prototypes

Labels: `DIR/labels/<image name>` (8-bit trainIds, 255 below the class threshold) and
`DIR/labels/thresholds.json`. Prototypes: `DIR/prototypes.pth`.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import config_parser, run_main, setup  # noqa: E402


def main(argv=None):
    parser = config_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (any stage)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--prototypes", action="store_true", help="compute source prototypes instead")
    args = parser.parse_args(argv)
    args.opts = list(args.opts) + ["MODEL.WEIGHTS", args.checkpoint]
    cfg = setup(args, output_dir_override=args.output)
    from spcl.engine import run_stage

    result = run_stage(cfg, "prototypes" if args.prototypes else "pseudo_labels", args.output)
    print(result["outputs"])


if __name__ == "__main__":
    run_main(main)
