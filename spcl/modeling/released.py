"""Checkpoints of the authors' released code (BinhuiXie/SPCL, and FADA, whose model code it reuses)
mapped onto this project's Segmentor.

Their files (`warmup.py`, `train_ours.py`, `train_ssl.py`) hold
`{"iteration", "feature_extractor": state_dict, "classifier": state_dict, "optimizer_*", …}`; the state
dicts carry `module.` when saved from DDP. Their modules (`core/models/feature_extractor.py`,
`core/models/classifier.py`):

* ResNet: torchvision's ResNet layout (`replace_stride_with_dilation=[False, True, True]`) under
  `IntermediateLayerGetter(return_layers={'layer4': 'out'})` as `.backbone`, so the keys are
  `backbone.conv1.weight`, `backbone.layer4.2.bn3.running_var`, … — the same names as ours.
* VGG-16 (LargeFOV): torchvision's `features` with pool4 (index 23) and pool5 (index 30) *removed*,
  then fc6, ReLU, fc7, ReLU appended, all in one `nn.Sequential` under `IntermediateLayerGetter` as
  `.backbone`: their `backbone.j` is our `features.j` for j ≤ 22, `features.(j+1)` for 23 ≤ j ≤ 28;
  `backbone.29` is fc6 and `backbone.31` is fc7 (ours keep the removed pools as Identity so the
  indices stay torchvision's).
* Classifier `ASPP_Classifier_V2`: `conv2d_list.{0..3}.{weight,bias}` → our `head.convs.{0..3}.*`
  (same dilations 6/12/18/24, outputs summed).

BatchNorm. With `FREEZE_BN True` (warm-up, align) their `core/models/layers.py` `FrozenBatchNorm2d`
computes `scale = weight * running_var.rsqrt()`, **without eps**; torchvision's FrozenBatchNorm2d and
`nn.BatchNorm2d` (ours, and theirs with `FREEZE_BN False` in self-training) use
`rsqrt(running_var + 1e-5)`. The same buffers therefore give a different function: each channel's
scale differs by the factor sqrt(var / (var + eps)), i.e. a relative 5e-6 / var (for ImageNet
ResNet-101 statistics, var is mostly 1e-3…1, so up to ~0.5 % per layer on small-variance channels,
compounding over 104 BN layers). Their frozen BN registers no `num_batches_tracked` buffer, so a
feature extractor without any `num_batches_tracked` key was saved from it; for such files the
conversion stores `running_var − eps` so our model computes exactly their function (channels whose
variance is below eps cannot be represented: they are clamped to 0 and counted in the report).
Files with `num_batches_tracked` (their `nn.BatchNorm2d`, self-training) are copied unchanged.
"""
from __future__ import annotations

import re
from typing import Optional


BN_EPS = 1e-5  # torchvision FrozenBatchNorm2d / nn.BatchNorm2d default
VGG_FC6, VGG_FC7 = 29, 31  # indices in the released VGG nn.Sequential
_VGG_KEY = re.compile(r"^backbone\.(\d+)\.(weight|bias)$")


def find_released(obj, depth: int = 3) -> Optional[dict]:
    """The dict holding both `feature_extractor` and `classifier` state dicts (at the top or nested
    up to `depth` levels under other keys), or None."""
    if not isinstance(obj, dict):
        return None
    fe, cls = obj.get("feature_extractor"), obj.get("classifier")
    if isinstance(fe, dict) and isinstance(cls, dict):
        return obj
    if depth > 0:
        for value in obj.values():
            found = find_released(value, depth - 1)
            if found is not None:
                return found
    return None


def _strip_module(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def detect_backbone(feature_extractor: dict) -> str:
    """`resnet` or `vgg16` from the released feature extractor's key layout."""
    keys = list(_strip_module(feature_extractor))
    if any(k.startswith("backbone.layer4.") for k in keys):
        return "resnet"
    if any(_VGG_KEY.match(k) for k in keys):
        return "vgg16"
    raise ValueError("released feature extractor is neither ResNet (backbone.layer4.*) nor VGG (backbone.N.*); "
                     f"first keys: {keys[:4]}")


def _vgg_key(key: str) -> str:
    m = _VGG_KEY.match(key)
    if not m:
        return key
    j, what = int(m.group(1)), m.group(2)
    if j <= 22:
        return f"backbone.features.{j}.{what}"
    if j <= 28:
        return f"backbone.features.{j + 1}.{what}"
    if j == VGG_FC6:
        return f"backbone.fc6.{what}"
    if j == VGG_FC7:
        return f"backbone.fc7.{what}"
    raise ValueError(f"released VGG key {key!r} has no counterpart (index {j} is a ReLU)")


def convert_released(obj: dict, backbone: Optional[str] = None, compensate_bn_eps: Optional[bool] = None,
                     eps: float = BN_EPS) -> tuple[dict, dict]:
    """Our Segmentor state dict from a released checkpoint (or the dict `find_released` finds in it).

    Args:
        backbone: `resnet…` | `vgg16` | None (detected from the keys).
        compensate_bn_eps: store `running_var − eps` (the file's BN had no eps); None = when the
            feature extractor has no `num_batches_tracked` key (their FrozenBatchNorm2d).
    Returns:
        (state dict with `backbone.*` / `head.convs.*` keys, info dict: backbone, bn_eps_compensated,
        bn_channels_below_eps, num_tensors).
    """
    found = find_released(obj)
    if found is None:
        raise ValueError("not a released SPCL/FADA checkpoint: no dict with 'feature_extractor' and 'classifier'")
    fe, cls = _strip_module(found["feature_extractor"]), _strip_module(found["classifier"])
    kind = detect_backbone(fe)
    if backbone is not None and (backbone == "vgg16") != (kind == "vgg16"):
        raise ValueError(f"released checkpoint holds a {kind} feature extractor, but backbone {backbone} was asked")
    state: dict = {}
    for k, v in fe.items():
        if k.endswith("num_batches_tracked"):
            continue
        state[_vgg_key(k) if kind == "vgg16" else k] = v
    for k, v in cls.items():
        if k.startswith("conv2d_list."):
            k = "head.convs." + k[len("conv2d_list."):]
        state[k] = v
    if compensate_bn_eps is None:
        has_bn = any(k.endswith("running_var") for k in fe)
        compensate_bn_eps = has_bn and not any(k.endswith("num_batches_tracked") for k in fe)
    below = 0
    if compensate_bn_eps:
        for k in [k for k in state if k.endswith("running_var")]:
            var = state[k]
            below += int((var < eps).sum())
            state[k] = (var.double() - eps).clamp_min(0).to(var.dtype)
    info = {"backbone": kind, "bn_eps_compensated": bool(compensate_bn_eps), "bn_channels_below_eps": below,
            "num_tensors": len(state)}
    return state, info
