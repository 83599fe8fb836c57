"""Make a model file to share, or show what a checkpoint was trained with.

    python tools/convert_checkpoint.py IN OUT [--backbone resnet101|vgg16] [--bn-eps auto|compensate|keep]
    python tools/convert_checkpoint.py --print-config CKPT > run.yaml

A stage checkpoint of this project (`checkpoints/model_final.pth`, …) becomes a slim model file:
`{"model": state_dict, "config", "stage", "iteration", "converted_from": {...}}`, without the
discriminator, optimiser, gradient-scaler and RNG state that only resuming needs. It loads wherever a
trained model does (`--checkpoint` of test.py / infer.py / analyze.py, `MODEL.WEIGHTS`,
`load_trained_segmentor`); resuming a stage from it is refused.

A checkpoint of the authors' released code (BinhuiXie/SPCL or FADA: `{"feature_extractor",
"classifier", …}`, DDP `module.` prefixes allowed) becomes this project's format
`{"model": state_dict, "converted_from": {...}}`. `MODEL.WEIGHTS` also reads released files directly
(same mapping); converting once gives a file whose keys can be inspected and skips the mapping on every
load. The converted weights are loaded into a freshly built segmentor before writing, so a file that does
not fit (wrong backbone, missing tensors) stops here with the keys named. BatchNorm: their frozen BN has no
eps; `auto` (default) stores `running_var − 1e-5` when the file comes from it (no `num_batches_tracked`
keys), see spcl/modeling/released.py. `--backbone` and `--bn-eps` apply to released files only.

`--print-config` prints the config a checkpoint of this project (full or slim) was trained with, as YAML
that `--config` takes: `… --print-config m.pth > m.yaml`, then `tools/test.py --config m.yaml …`.

Files are read without running code from them (spcl/utils/safe_load.py); OUT is written atomically.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import UsageError, run_main  # noqa: E402  (also makes an uninstalled checkout importable)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="checkpoint to read: a stage checkpoint of this project, or a released one")
    p.add_argument("output", nargs="?", help="model file to write (not with --print-config)")
    p.add_argument("--print-config", action="store_true",
                   help="print the config stored in the checkpoint as YAML (for --config) and write nothing")
    p.add_argument("--backbone", default=None, choices=["resnet101", "resnet50", "resnet152", "vgg16"],
                   help="released files: MODEL.BACKBONE of the file (default: resnet101 or vgg16, from the keys)")
    p.add_argument("--bn-eps", default=None, choices=["auto", "compensate", "keep"],
                   help="released files: store running_var − 1e-5 (compensate), unchanged (keep), or decide from "
                        "the file (auto, the default)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)

    from spcl.modeling.weights import not_a_model, read_checkpoint, weights_kind

    if args.print_config:
        if args.output:
            raise UsageError(f"--print-config writes to stdout: give only the checkpoint, not {args.output}")
        return print_config(args.input, read_checkpoint(args.input, mmap=True))
    if not args.output:
        raise UsageError("give IN and OUT (the file to write), or --print-config IN")
    if os.path.exists(args.input) and os.path.exists(args.output) and os.path.samefile(args.input, args.output):
        raise ValueError(f"OUT is IN ({args.output}): give another path, the original file is kept as it is")
    obj = read_checkpoint(args.input)
    kind = weights_kind(obj)
    if kind == "released":
        return convert_released_file(args, obj)
    if args.backbone or args.bn_eps:
        raise UsageError(f"--backbone and --bn-eps apply to released SPCL/FADA checkpoints; {args.input} is not one")
    if kind == "checkpoint":
        return write_slim(args.input, args.output, obj)
    raise ValueError(f"{args.input} holds {not_a_model(kind)}"
                     "; expected a stage checkpoint of this project or a released SPCL/FADA checkpoint")


def print_config(path: str, obj) -> dict:
    """Print the config (YAML) stored in checkpoint `path` (loaded as `obj`) to stdout."""
    config = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(config, str):
        raise ValueError(f"{path} holds no config: only stage checkpoints of this project (and slim files made "
                         "from them) record the config they were trained with")
    sys.stdout.write(config if config.endswith("\n") else config + "\n")
    return {"config": config}


def write_slim(src: str, dst: str, obj: dict) -> dict:
    """Write the model of checkpoint `obj` (read from `src`) to `dst` atomically, with its config, stage and
    iteration and without training state (optimisers, RNG, discriminator, …)."""
    from spcl.engine.checkpoint import SLIM_FORMAT
    from spcl.modeling.weights import segmentor_state_from
    from spcl.utils.io import atomic_torch_save

    state, _ = segmentor_state_from(obj)
    iteration = obj.get("iteration")
    origin = obj.get("converted_from") if isinstance(obj.get("converted_from"), dict) else {
        "path": os.path.abspath(src), "format": SLIM_FORMAT, "stage": obj.get("stage"), "iteration": iteration}
    out = {"model": state, "iteration": iteration if isinstance(iteration, int) else -1, "converted_from": origin}
    out.update({k: obj[k] for k in ("stage", "config") if isinstance(obj.get(k), str)})
    # model_best.pth's: chosen by target-val mIoU (an ORACLE choice), and those metrics, travel with the model
    out.update({k: obj[k] for k in ("oracle", "metrics") if k in obj})
    dropped = sorted(k for k in obj if k not in out)
    atomic_torch_save(out, dst)
    size = os.path.getsize(dst) / 2**20
    print(f"wrote {dst} ({size:.1f} MB): the model of {src} ({len(state)} tensors, stage {out.get('stage', '?')}, "
          f"iteration {out['iteration']}) with {'its config' if 'config' in out else 'no config (none stored)'}; "
          f"left out: {', '.join(dropped) or 'nothing'}")
    return origin


def convert_released_file(args, obj: dict) -> dict:
    """Map a released SPCL/FADA checkpoint onto our segmentor, check it fits, and write it to `args.output`."""
    from spcl.modeling.aspp import ASPPClassifier
    from spcl.modeling.backbones import build_backbone
    from spcl.modeling.released import convert_released, find_released
    from spcl.modeling.segmentor import Segmentor
    from spcl.modeling.weights import load_state
    from spcl.utils.io import atomic_torch_save

    compensate = {"auto": None, None: None, "compensate": True, "keep": False}[args.bn_eps]
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
    atomic_torch_save(out, args.output)
    print(f"wrote {args.output}: {backbone}, {num_classes} classes, {len(state)} tensors, "
          f"BN eps compensated: {info['bn_eps_compensated']} ({info['bn_channels_below_eps']} channels below eps)")
    return out["converted_from"]


if __name__ == "__main__":
    run_main(main)
