"""Convert a checkpoint of the authors' released code (BinhuiXie/SPCL or FADA: `{"feature_extractor",
"classifier", …}`, DDP `module.` prefixes allowed) into this project's format
`{"model": state_dict, "converted_from": {...}}`, loadable by `MODEL.WEIGHTS` and every `--checkpoint`.

    python tools/convert_checkpoint.py IN OUT [--backbone resnet101|vgg16] [--bn-eps auto|compensate|keep]

`MODEL.WEIGHTS` also reads released files directly (same mapping); converting once gives a file whose
keys can be inspected and skips the mapping on every load. The converted weights are loaded into a
freshly built segmentor before writing, so a file that does not fit (wrong backbone, missing tensors)
stops here with the keys named. BatchNorm: their frozen BN has no eps; `auto` (default) stores
`running_var − 1e-5` when the file comes from it (no `num_batches_tracked` keys), see
spcl/modeling/released.py.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run_main  # noqa: E402  (also makes an uninstalled checkout importable)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="released checkpoint (.pth)")
    p.add_argument("output", help="converted checkpoint to write")
    p.add_argument("--backbone", default=None, choices=["resnet101", "resnet50", "resnet152", "vgg16"],
                   help="MODEL.BACKBONE of the file (default: resnet101 or vgg16, detected from the keys)")
    p.add_argument("--bn-eps", default="auto", choices=["auto", "compensate", "keep"],
                   help="store running_var − 1e-5 (compensate), unchanged (keep), or decide from the file (auto)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)

    from spcl.modeling.backbones import build_backbone
    from spcl.modeling.aspp import ASPPClassifier
    from spcl.modeling.released import convert_released, find_released
    from spcl.modeling.segmentor import Segmentor
    from spcl.modeling.weights import load_state, read_checkpoint
    from spcl.utils.io import atomic_torch_save

    if os.path.exists(args.input) and os.path.exists(args.output) and os.path.samefile(args.input, args.output):
        raise ValueError(f"OUT is IN ({args.output}): give another path, the original file is kept as it is")
    obj = read_checkpoint(args.input)
    compensate = {"auto": None, "compensate": True, "keep": False}[args.bn_eps]
    state, info = convert_released(obj, args.backbone, compensate)
    backbone = args.backbone or ("vgg16" if info["backbone"] == "vgg16" else "resnet101")
    num_classes = state["head.convs.0.weight"].shape[0]
    dilations = [6, 12, 18, 24][: len([k for k in state if k.startswith("head.convs.") and k.endswith(".weight")])]
    net = build_backbone(backbone, frozen_bn=True)
    model = Segmentor(net, ASPPClassifier(net.out_channels, num_classes, dilations))
    load_state(model, state, args.input, "released")  # the keys and shapes must fit, or nothing is written
    iteration = find_released(obj).get("iteration")
    out = {"model": model.state_dict(), "iteration": iteration if isinstance(iteration, int) else 0,
           "converted_from": {"path": os.path.abspath(args.input), "format": "released SPCL/FADA",
                              "backbone": backbone, "num_classes": int(num_classes), **info}}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_torch_save(out, args.output)
    print(f"wrote {args.output}: {backbone}, {num_classes} classes, {len(state)} tensors, "
          f"BN eps compensated: {info['bn_eps_compensated']} ({info['bn_channels_below_eps']} channels below eps)")
    return out["converted_from"]


if __name__ == "__main__":
    run_main(main)
