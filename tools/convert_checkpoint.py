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
    from spcl.modeling.weights import read_checkpoint
    from spcl.utils.io import atomic_torch_save

    obj = read_checkpoint(args.input)
    compensate = {"auto": None, "compensate": True, "keep": False}[args.bn_eps]
    state, info = convert_released(obj, args.backbone, compensate)
    backbone = args.backbone or ("vgg16" if info["backbone"] == "vgg16" else "resnet101")
    num_classes = state["head.convs.0.weight"].shape[0]
    dilations = [6, 12, 18, 24][: len([k for k in state if k.startswith("head.convs.") and k.endswith(".weight")])]
    net = build_backbone(backbone, frozen_bn=True)
    model = Segmentor(net, ASPPClassifier(net.out_channels, num_classes, dilations))
    own = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if bad or missing or unexpected:
        raise ValueError(f"{args.input} does not fit a {backbone} segmentor with {num_classes} classes:\n"
                         + "\n".join(["shape " + b for b in bad] + ["missing " + k for k in missing]
                                     + ["unexpected " + k for k in unexpected][:40]))
    model.load_state_dict(state, strict=False)
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
