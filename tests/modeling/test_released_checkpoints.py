"""Checkpoints of the authors' released code (BinhuiXie/SPCL, FADA) load into our segmentor and give
the same logits; missing tensors of a segmentation checkpoint are an error that names them.

The released modules are re-created here as small stand-ins with their exact key layout
(core/models/feature_extractor.py, classifier.py, layers.py): torchvision ResNet-101 (dilated) under
IntermediateLayerGetter({'layer4': 'out'}) with their eps-free FrozenBatchNorm2d; VGG-16 features
without pool4/pool5 + fc6/fc7 in one Sequential under IntermediateLayerGetter; ASPP_Classifier_V2
with conv2d_list.{0..3}."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
import torchvision
from torchvision.models._utils import IntermediateLayerGetter

from conftest import run_tool
from spcl.config import load_config
from spcl.modeling import build_segmentor, load_segmentor_weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TheirFrozenBN(nn.Module):
    """core/models/layers.py FrozenBatchNorm2d: running_var.rsqrt(), no eps, no num_batches_tracked."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x):
        scale = self.weight * self.running_var.rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


class TheirASPP(nn.Module):
    """core/models/classifier.py ASPP_Classifier_V2."""

    def __init__(self, in_channels, num_classes, dilations=(6, 12, 18, 24)):
        super().__init__()
        self.conv2d_list = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, 1, d, d, bias=True) for d in dilations)
        for m in self.conv2d_list:
            m.weight.data.normal_(0, 0.01)
            m.bias.data.normal_(0, 0.1)  # non-zero so the mapping of biases is checked

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for i in range(len(self.conv2d_list) - 1):
            out += self.conv2d_list[i + 1](x)
        return out


class TheirResNetFE(nn.Module):
    def __init__(self, norm=TheirFrozenBN):
        super().__init__()
        net = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, True, True],
                                           norm_layer=norm)
        self.backbone = IntermediateLayerGetter(net, return_layers={"layer4": "out"})

    def forward(self, x):
        return self.backbone(x)["out"]


class TheirVGGFE(nn.Module):
    def __init__(self):
        super().__init__()
        feats = list(torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).children())
        feats = nn.Sequential(*(feats[i] for i in list(range(23)) + list(range(24, 30))))
        for i in (23, 25, 27):
            feats[i].dilation, feats[i].padding = (2, 2), (2, 2)
        fc6 = nn.Conv2d(512, 1024, 3, padding=4, dilation=4)
        fc7 = nn.Conv2d(1024, 1024, 3, padding=4, dilation=4)
        seq = nn.Sequential(*(list(feats) + [fc6, nn.ReLU(inplace=True), fc7, nn.ReLU(inplace=True)]))
        self.backbone = IntermediateLayerGetter(seq, return_layers={"4": "low_fea", "32": "out"})

    def forward(self, x):
        return self.backbone(x)["out"]


def _randomise_bn(module, seed=0):
    """Non-trivial BN buffers; log-uniform variances in [1e-4, 1] so a missing eps matters."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (TheirFrozenBN, nn.BatchNorm2d)):
            n = m.running_var.numel()
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            var = 10 ** (-4 * torch.rand(n, generator=g))
            m.running_var.copy_(var)
            # scale weight/sqrt(var) of 0.2-0.6 keeps 33 residual blocks bounded
            m.weight.data.copy_(var.sqrt() * (torch.rand(n, generator=g) * 0.4 + 0.2))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.05)


def _save_released(fe, cls, path, nested=False):
    ckpt = {"iteration": 123,
            "feature_extractor": {"module." + k: v for k, v in fe.state_dict().items()},
            "classifier": {"module." + k: v for k, v in cls.state_dict().items()},
            "optimizer_fea": {}, "optimizer_cls": {}}
    torch.save({"checkpoint": ckpt} if nested else ckpt, path)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _ours(backbone, num_classes, path=None, freeze="True"):
    opts = ["MODEL.BACKBONE", backbone, "MODEL.NUM_CLASSES", str(num_classes), "MODEL.FREEZE_BN", freeze]
    return build_segmentor(load_config("", opts), load_weights=False) if path is None else \
        build_segmentor(load_config("", opts + ["MODEL.WEIGHTS", path]))


@pytest.fixture(scope="module")
def released_r101(tmp_path_factory):
    torch.manual_seed(0)
    fe, cls = TheirResNetFE().eval(), TheirASPP(2048, 19).eval()
    _randomise_bn(fe)
    path = str(tmp_path_factory.mktemp("rel") / "model_iter020000.pth")
    _save_released(fe, cls, path, nested=True)
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        ref = cls(fe(x))
    return path, x, ref


def test_released_resnet101_same_logits(released_r101, spcl_log):
    path, x, ref = released_r101
    model = _ours("resnet101", 19, path).eval()
    assert "released" in spcl_log.text and "running_var" in spcl_log.text
    with torch.no_grad():
        out = model(x)["logits"]
    assert out.shape == ref.shape == (1, 19, 9, 9)
    assert _rel(out, ref) <= 1e-3, _rel(out, ref)
    # trainable BN (self-training) in eval mode computes the same function from the same buffers
    model_bn = _ours("resnet101", 19, path, freeze="False").eval()
    with torch.no_grad():
        assert _rel(model_bn(x)["logits"], ref) <= 1e-3


def test_bn_eps_matters_without_compensation(released_r101, tmp_path):
    """Copying their buffers unchanged (eps added by our BN) gives logits ~8x beyond the tolerance: the
    compensation is what makes the test above pass."""
    path, x, ref = released_r101
    from spcl.modeling.released import convert_released

    state, info = convert_released(torch.load(path, weights_only=False), compensate_bn_eps=False)
    assert not info["bn_eps_compensated"]
    model = _ours("resnet101", 19)
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        assert _rel(model.eval()(x)["logits"], ref) > 3e-3  # ~8e-3 here; the tolerance above is 1e-3


def test_a_released_file_of_trainable_batchnorm_is_copied_unchanged(tmp_path):
    """Their self-training (`train_ssl.py`, FREEZE_BN False) saves nn.BatchNorm2d, which has eps and a
    num_batches_tracked buffer: its variances are copied as they are (compensating them would take eps off a
    function that already adds it), and our model computes its logits."""
    from spcl.modeling.released import convert_released

    torch.manual_seed(2)
    fe, cls = TheirResNetFE(norm=nn.BatchNorm2d).eval(), TheirASPP(2048, 19).eval()
    _randomise_bn(fe)
    path = str(tmp_path / "model_iter020000.pth")
    _save_released(fe, cls, path)
    state, info = convert_released(torch.load(path, weights_only=False))
    assert not info["bn_eps_compensated"] and info["bn_channels_below_eps"] == 0
    var = "backbone.layer4.2.bn3.running_var"
    assert torch.equal(state[var], fe.state_dict()[var])
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert _rel(_ours("resnet101", 19, path, freeze="False").eval()(x)["logits"], cls(fe(x))) <= 1e-3


def test_variances_below_eps_are_clamped_to_zero_and_counted():
    """running_var − eps cannot go below 0: variances 0 and 5e-6 become 0 and are the two channels the report
    counts; 2e-5 and 1 lose eps."""
    from spcl.modeling.released import BN_EPS, convert_released

    var = torch.tensor([0.0, 5e-6, 2e-5, 1.0])
    fe = {"backbone.layer4.0.bn1.running_var": var, "backbone.layer4.0.bn1.running_mean": torch.zeros(4)}
    state, info = convert_released({"feature_extractor": fe, "classifier": {}})
    assert info["bn_eps_compensated"] and info["bn_channels_below_eps"] == 2
    expected = (var.double() - BN_EPS).clamp_min(0).float()
    assert torch.equal(state["backbone.layer4.0.bn1.running_var"], expected)
    assert expected[0] == expected[1] == 0 and expected[3] == pytest.approx(1 - BN_EPS)


def test_released_dicts_are_found_three_levels_down_and_every_module_prefix_goes():
    """`find_released` looks up to three levels under other keys (a training framework's {"state": {"checkpoint":
    …}}); a model wrapped twice (DDP around a wrapper) saved "module.module." keys, and both prefixes go."""
    from spcl.modeling.released import convert_released, find_released

    fe = {"module.module.backbone.layer4.0.bn1.running_mean": torch.zeros(2)}
    cls = {"module.conv2d_list.0.weight": torch.ones(2, 2, 3, 3)}
    inner = {"feature_extractor": fe, "classifier": cls}
    for depth in range(4):
        wrapped = inner
        for level in range(depth):
            wrapped = {f"level{level}": wrapped, "other": 1}
        assert find_released(wrapped) is inner, depth
    assert find_released({"a": {"b": {"c": {"d": inner}}}}) is None  # four levels: beyond the search
    state, _ = convert_released(inner)
    assert sorted(state) == ["backbone.layer4.0.bn1.running_mean", "head.convs.0.weight"]


def test_released_vgg16_same_logits(tmp_path):
    torch.manual_seed(1)
    fe, cls = TheirVGGFE().eval(), TheirASPP(1024, 16).eval()
    with torch.no_grad():
        for m in fe.modules():  # small weights keep 15 ReLU layers away from all-zero
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2.0 / (m.in_channels * 9)) ** 0.5)
                m.bias.normal_(0, 0.01)
    path = str(tmp_path / "vgg_released.pth")
    _save_released(fe, cls, path)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        ref = cls(fe(x))
        model = _ours("vgg16", 16, path).eval()
        out = model(x)["logits"]
    assert ref.abs().max() > 0
    assert _rel(out, ref) <= 1e-5
    # the index shift of the removed pools: their backbone.23 is our features.24 (first conv5 conv)
    assert torch.equal(model.backbone.features[24].weight, fe.backbone["23"].weight)
    assert torch.equal(model.backbone.fc6.weight, fe.backbone["29"].weight)
    assert torch.equal(model.backbone.fc7.bias, fe.backbone["31"].bias)


def test_convert_tool_writes_our_format(released_r101, tmp_path):
    path, x, ref = released_r101
    out = str(tmp_path / "converted.pth")
    proc = run_tool("convert_checkpoint.py", path, out, "--backbone", "resnet101")
    assert proc.returncode == 0, proc.stderr
    data = torch.load(out, weights_only=False)
    assert set(data) >= {"model", "converted_from"} and data["iteration"] == 123
    assert data["converted_from"]["bn_eps_compensated"] is True and data["converted_from"]["num_classes"] == 19
    assert all(k.startswith(("backbone.", "head.")) for k in data["model"])
    model = _ours("resnet101", 19)
    result = load_segmentor_weights(model, out)
    assert result == {"missing": [], "unexpected": [], "kind": "checkpoint"}
    with torch.no_grad():
        assert _rel(model.eval()(x)["logits"], ref) <= 1e-3
    # a model to start from, not a stage to resume
    from spcl.engine.checkpoint import Checkpointer

    with pytest.raises(KeyError, match="it is a model converted from a released SPCL/FADA checkpoint, which cannot "
                                       "be resumed from; give it as MODEL.WEIGHTS"):
        Checkpointer(None, {"model": model}, {"model": torch.optim.SGD(model.parameters(), lr=0.1)}).resume(out)
    # the wrong backbone is refused, naming the layout
    bad = run_tool("convert_checkpoint.py", path, str(tmp_path / "x.pth"), "--backbone", "vgg16")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "holds a resnet feature extractor, but backbone vgg16 was asked" in bad.stderr


def test_segmentation_checkpoint_with_missing_keys_is_an_error(tmp_path):
    torch.manual_seed(0)
    src = _ours("resnet18", 19)
    state = src.state_dict()
    dropped = ["backbone.layer3.0.conv1.weight", "head.convs.2.bias"]
    ours = str(tmp_path / "partial.pth")
    torch.save({"model": {k: v for k, v in state.items() if k not in dropped}, "iteration": 5}, ours)
    with pytest.raises(ValueError) as e:
        load_segmentor_weights(_ours("resnet18", 19), ours)
    assert all(k in str(e.value) for k in dropped) and "partial.pth" in str(e.value)
    # the same for a released file whose classifier lost a branch
    fe = {"module.backbone." + k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    cls = {"module.conv2d_list." + k[len("head.convs."):]: v for k, v in state.items()
           if k.startswith("head.") and not k.startswith("head.convs.3.")}
    rel = str(tmp_path / "released_partial.pth")
    torch.save({"feature_extractor": fe, "classifier": cls}, rel)
    with pytest.raises(ValueError, match=r"head\.convs\.3\.weight"):
        load_segmentor_weights(_ours("resnet18", 19), rel)


def test_imagenet_file_may_lack_only_the_head(tmp_path, spcl_log):
    tv = torchvision.models.resnet18(weights=None)
    sd = tv.state_dict()
    full = str(tmp_path / "imagenet.pth")
    torch.save(sd, full)
    result = load_segmentor_weights(_ours("resnet18", 19), full)
    assert result["kind"] == "imagenet" and result["missing"] and all(k.startswith("head.") for k in result["missing"])
    assert "missing keys" in spcl_log.text
    partial = str(tmp_path / "imagenet_partial.pth")
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer4.1.")}, partial)
    with pytest.raises(ValueError, match=r"layer4\.1\.conv1\.weight"):
        load_segmentor_weights(_ours("resnet18", 19), partial)
