"""DeepLab-v2 models (docs/method.md "Model"): output stride, parameter count, ASPP sum, frozen BatchNorm, loading
torchvision / project weights, the discriminator and the optimiser groups."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from spcl.config import load_config
from spcl.modeling import (ASPPClassifier, build_discriminator, build_segmentor, load_segmentor_weights,
                           load_trained_segmentor, predict_probs)
from spcl.modeling.weights import weights_kind


def cfg_of(*opts):
    return load_config("", list(opts))


@pytest.mark.parametrize("backbone,channels", [("resnet18", 512), ("resnet50", 2048), ("vgg16", 1024)])
def test_output_stride_8(backbone, channels):
    torch.manual_seed(0)
    model = build_segmentor(cfg_of("MODEL.BACKBONE", backbone, "MODEL.NUM_CLASSES", "16")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 64))
    assert out["feat"].shape == (1, channels, 6, 8)
    assert out["logits"].shape == (1, 16, 6, 8)
    assert model.backbone.out_channels == channels


def test_resnet101_parameter_count():
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet101", "MODEL.NUM_CLASSES", "19"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 43_795_724
    head = sum(p.numel() for p in model.head.parameters())
    assert head == 4 * (2048 * 19 * 9 + 19)
    # dilations of docs/method.md "Model": layer3 dilation 2, layer4 dilation 4, both stride 1
    assert model.backbone.layer3[1].conv2.dilation == (2, 2) and model.backbone.layer4[1].conv2.dilation == (4, 4)
    assert model.backbone.layer3[0].conv2.stride == (1, 1) and model.backbone.layer4[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_small_resnets_get_the_deeplab_dilations_on_every_3x3_conv(name):
    """The CPU backbones (BasicBlock, which torchvision will not dilate) follow docs/method.md "Model" as the
    large ones: every 3×3 conv of layer3 at stride 1, dilation 2, of layer4 at stride 1, dilation 4, padded
    to keep the size; the 1×1 downsample convs at stride 1. The output size alone cannot tell dilation 2 from 4."""
    from spcl.modeling.backbones.resnet import ResNetEncoder

    enc = ResNetEncoder(name, frozen_bn=True)
    for layer, d in ((enc.layer3, 2), (enc.layer4, 4)):
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
        assert [(c.dilation, c.padding) for c in convs if c.kernel_size == (3, 3)] == \
            [((d, d), (d, d))] * (2 * len(layer))
    assert all(c.dilation == (1, 1) for c in enc.layer2.modules() if isinstance(c, nn.Conv2d))


def test_aspp_output_is_the_sum_of_its_branches():
    torch.manual_seed(0)
    aspp = ASPPClassifier(8, 5, dilations=(1, 2, 3, 6), init_std=0.01)
    for conv in aspp.convs:  # non-zero biases so they count too
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 8, 11, 13)
    expected = sum(F.conv2d(x, c.weight, c.bias, padding=d, dilation=d) for c, d in zip(aspp.convs, (1, 2, 3, 6)))
    torch.testing.assert_close(aspp(x), expected)
    assert aspp(x).shape == (2, 5, 11, 13)


def test_aspp_init_and_default_dilations():
    torch.manual_seed(0)
    aspp = ASPPClassifier(256, 19)
    assert [c.dilation for c in aspp.convs] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert [c.padding for c in aspp.convs] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    w = torch.cat([c.weight.flatten() for c in aspp.convs])
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert all((c.bias == 0).all() for c in aspp.convs)


def _randomised_tv_resnet18():
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return tv


def test_torchvision_state_dict_loads_into_the_backbone(tmp_path):
    tv = _randomised_tv_resnet18()
    sd = tv.state_dict()
    assert "fc.weight" in sd
    path = str(tmp_path / "resnet18-imagenet.pth")
    torch.save(sd, path)
    for freeze in ("True", "False"):
        model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.WEIGHTS", path,
                                       "MODEL.FREEZE_BN", freeze))
        own = model.backbone.state_dict()
        for key, value in sd.items():
            if key.startswith("fc.") or key.endswith("num_batches_tracked"):
                continue
            assert torch.equal(own[key], value), key
    fresh = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), load_weights=False)
    result = load_segmentor_weights(fresh, path)
    assert result["kind"] == "imagenet"
    assert sorted(result["unexpected"]) == ["backbone.fc.bias", "backbone.fc.weight"]
    assert sorted(result["missing"]) == sorted(k for k in fresh.state_dict() if k.startswith("head."))
    assert torch.equal(fresh.backbone.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])


def test_project_checkpoint_round_trip_and_prefixes(tmp_path):
    torch.manual_seed(0)
    src = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.NUM_CLASSES", "16"))
    nn.init.normal_(src.head.convs[2].bias)
    ckpt = str(tmp_path / "model_0000010.pth")
    torch.save({"model": src.state_dict(), "iteration": 10}, ckpt)
    ddp = str(tmp_path / "ddp.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, ddp)
    # a file of one's own: a DDP-wrapped model's state under "model", with its prototypes beside it
    exported = str(tmp_path / "exported.pth")
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}, "prototypes": torch.zeros(16, 512)},
               exported)
    for path in (ckpt, ddp, exported):
        dst = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.NUM_CLASSES", "16"), load_weights=False)
        result = load_segmentor_weights(dst, path)
        assert result == {"missing": [], "unexpected": [], "kind": "checkpoint"}
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), k


def test_head_shape_mismatch_names_the_key(tmp_path):
    src = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.NUM_CLASSES", "19"))
    path = str(tmp_path / "ckpt19.pth")
    torch.save({"model": src.state_dict(), "iteration": 1}, path)
    with pytest.raises(ValueError) as e:
        build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.NUM_CLASSES", "16", "MODEL.WEIGHTS", path))
    msg = str(e.value)
    assert "head.convs.0.weight" in msg and path in msg and "(19, 512, 3, 3)" in msg and "(16, 512, 3, 3)" in msg


def test_checkpoint_of_a_larger_model_is_refused_not_truncated(tmp_path):
    """A ResNet-34 checkpoint holds every ResNet-18 tensor with the same shapes, plus more blocks; a 4-branch
    ASPP head holds the 3-branch one. Loading either into the smaller model must not silently drop the rest."""
    big = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet34"), load_weights=False)
    path = str(tmp_path / "r34.pth")
    torch.save({"model": big.state_dict(), "iteration": 1}, path)
    small = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), load_weights=False)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(ValueError, match=r"r34\.pth \(checkpoint\) holds \d+ tensor\(s\) the model does not have: "
                                         r"backbone\.layer1\.2\.conv1\.weight"):
        load_segmentor_weights(small, path)
    assert all(torch.equal(v, before[k]) for k, v in small.state_dict().items())  # refused: nothing loaded
    four = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.ASPP_DILATIONS", "[1, 2, 3, 4]"),
                           load_weights=False)
    path = str(tmp_path / "aspp4.pth")
    torch.save(four.state_dict(), path)
    three = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.ASPP_DILATIONS", "[1, 2, 3]"),
                            load_weights=False)
    with pytest.raises(ValueError, match=r"2 tensor\(s\) the model does not have: head\.convs\.3\.weight, "
                                         r"head\.convs\.3\.bias \(wrong MODEL\.BACKBONE or MODEL\.ASPP_DILATIONS\?\)"):
        load_segmentor_weights(three, path)
    # an ImageNet file of the larger backbone is refused too; its own classifier (fc) is not a surplus
    imagenet = {k[len("backbone."):]: v for k, v in big.state_dict().items() if k.startswith("backbone.")}
    imagenet.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    path = str(tmp_path / "r34-imagenet.pth")
    torch.save(imagenet, path)
    with pytest.raises(ValueError, match=r"\(imagenet\) holds") as e:
        load_segmentor_weights(small, path)
    assert "layer1.2" in str(e.value) and "backbone.fc." not in str(e.value)


def test_unusable_weight_files_raise(tmp_path):
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), load_weights=False)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_segmentor_weights(model, str(tmp_path / "nothing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(IOError, match="junk.pth"):
        load_segmentor_weights(model, str(junk))
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="none of its"):
        load_segmentor_weights(model, str(other))
    for obj in ([1, 2, 3], torch.zeros(3), {"note": "no tensors"}):  # pickled, but no state dict in it
        listed = tmp_path / "not_a_state.pth"
        torch.save(obj, listed)
        with pytest.raises(ValueError, match=rf"weights file {listed} holds a {type(obj).__name__} without tensors"):
            load_segmentor_weights(model, str(listed))
    # a folder: a stage folder gets its final checkpoint suggested, any other folder a plain hint
    stage = tmp_path / "3_align"
    (stage / "checkpoints").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match=r"3_align' is a folder; give a checkpoint or weights file"):
        load_segmentor_weights(model, str(stage))
    (stage / "checkpoints" / "model_final.pth").write_bytes(b"x")
    for folder in (stage, stage / "checkpoints"):  # the stage folder, or its checkpoints folder
        with pytest.raises(IsADirectoryError, match=r"is a folder: did you mean .*3_align/checkpoints/model_final\.pth"):
            load_segmentor_weights(model, str(folder))


def test_frozen_or_trainable_bn_by_config():
    frozen = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.FREEZE_BN", "True"))
    trainable = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.FREEZE_BN", "False"))
    override = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.FREEZE_BN", "True"), freeze_bn=False)
    n_bn = sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert n_bn == 20 and not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    for m in (trainable, override):
        assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 20
        assert not any(isinstance(x, FrozenBatchNorm2d) for x in m.modules())
    n_frozen = sum(p.numel() for p in frozen.parameters())
    n_train = sum(p.numel() for p in trainable.parameters())
    bn_affine = sum(2 * m.num_features for m in trainable.modules() if isinstance(m, nn.BatchNorm2d))
    assert n_train - n_frozen == bn_affine


def test_forward_backward_with_frozen_bn_keeps_bn_buffers():
    torch.manual_seed(0)
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.FREEZE_BN", "True")).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if ".bn" in k or "downsample.1" in k
              or k.startswith("backbone.bn1")}
    assert len(before) == 20 * 4
    out = model(torch.randn(2, 3, 32, 32))
    loss = F.cross_entropy(out["logits"], torch.randint(0, 19, (2, 4, 4)))
    loss.backward()
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert model.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad.abs().sum() > 0
    # trainable BN, by contrast, updates its running statistics in training mode
    model2 = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.FREEZE_BN", "False")).train()
    rm = model2.backbone.bn1.running_mean.clone()
    model2(torch.randn(2, 3, 32, 32))
    assert not torch.equal(model2.backbone.bn1.running_mean, rm)


def test_vgg16_torchvision_features_load(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(2)
    features = make_layers(cfgs["D"])  # torchvision's VGG-16 `features` (same module indices)
    sd = {"features." + k: v for k, v in features.state_dict().items()}
    sd["classifier.6.weight"] = torch.zeros(10, 4)
    sd["classifier.6.bias"] = torch.zeros(10)
    path = str(tmp_path / "vgg16-imagenet.pth")
    torch.save(sd, path)
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "vgg16"), load_weights=False)
    result = load_segmentor_weights(model, path)
    assert result["kind"] == "imagenet"
    assert sorted(result["unexpected"]) == ["backbone.classifier.6.bias", "backbone.classifier.6.weight"]
    missing = sorted(result["missing"])
    assert all(k.startswith(("backbone.fc6", "backbone.fc7", "head.")) for k in missing) and len(missing) == 12
    for k, v in sd.items():
        if k.startswith("features."):
            assert torch.equal(model.backbone.state_dict()[k], v), k
    assert len([k for k in sd if k.startswith("features.")]) == 26  # 13 convs
    # LargeFOV shape: pool4/pool5 removed, conv5 dilation 2, fc6/fc7 dilation 4
    assert isinstance(model.backbone.features[23], nn.Identity) and isinstance(model.backbone.features[30], nn.Identity)
    assert all(model.backbone.features[i].dilation == (2, 2) for i in (24, 26, 28))
    assert model.backbone.fc6.dilation == (4, 4) and model.backbone.fc7.dilation == (4, 4)
    # fc6/fc7, which an ImageNet file leaves at init, start from N(0, 0.01), zero bias (docs/method.md "Model");
    # ~4.7M and ~9.4M draws put the sample std within 1 % of 0.01
    for fc in (model.backbone.fc6, model.backbone.fc7):
        assert fc.weight.std().item() == pytest.approx(0.01, rel=0.01) and abs(fc.weight.mean().item()) < 1e-4
        assert torch.equal(fc.bias, torch.zeros_like(fc.bias))


def test_discriminator_shape():
    d = build_discriminator(cfg_of("MODEL.NUM_CLASSES", "16"))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 4
    assert d(torch.randn(2, 16, 64, 96)).shape == (2, 1, 2, 3)


def test_param_groups_head_lr_factor():
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"))
    groups = model.param_groups(2.5e-4, 10.0)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == 2.5e-4 and groups[1]["lr"] == pytest.approx(2.5e-3)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.head.parameters()}


def test_a_file_with_nan_weights_is_refused(tmp_path):
    """A NaN in a checkpoint (a diverged run of other code) makes every prediction meaningless: it is an
    error naming the tensor, and nothing is loaded."""
    src = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), load_weights=False)
    state = src.state_dict()
    state["head.convs.1.weight"][0, 0, 0, 0] = float("nan")
    state["backbone.layer2.0.bn1.running_var"][3] = float("inf")
    path = str(tmp_path / "nan.pth")
    torch.save({"model": state}, path)
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), load_weights=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"nan\.pth \(checkpoint\) holds NaN or infinite values in 2 tensor\(s\): "
                                         r"backbone\.layer2\.0\.bn1\.running_var, head\.convs\.1\.weight"):
        load_segmentor_weights(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_what_a_weights_file_holds():
    state = {"conv1.weight": torch.zeros(1)}
    assert weights_kind(state) == "imagenet"
    assert weights_kind({"backbone.conv1.weight": torch.zeros(1)}) == "checkpoint"
    assert weights_kind({"state_dict": {"module.backbone.conv1.weight": torch.zeros(1)}}) == "checkpoint"
    assert weights_kind({"model": state, "iteration": 3}) == "checkpoint"
    assert weights_kind({"run": {"feature_extractor": state, "classifier": state}}) == "released"
    assert weights_kind({"optimizer": {}}) is None and weights_kind([state]) is None
    protos = {"prototypes": torch.zeros(19, 512), "counts": torch.ones(19), "init": "pixel_mean"}
    assert weights_kind(protos) == "prototypes"  # a dict of tensors, but not an ImageNet backbone


def test_a_prototypes_file_given_as_a_model_is_named_as_such(tmp_path):
    """The `prototypes` stage's file where a model goes (infer.py, gen_pseudo.py, analyze.py, MODEL.WEIGHTS):
    said to hold prototypes, not described as an ImageNet backbone file."""
    path = str(tmp_path / "prototypes.pth")
    torch.save({"prototypes": torch.zeros(19, 512), "counts": torch.ones(19), "init": "pixel_mean"}, path)
    cfg = cfg_of("MODEL.BACKBONE", "resnet18")
    for load in (lambda: load_trained_segmentor(cfg, path),
                 lambda: load_segmentor_weights(build_segmentor(cfg, load_weights=False), path)):
        with pytest.raises(ValueError, match=rf"{path} holds class prototypes \(the `prototypes` stage's") as e:
            load()
        assert "ImageNet" not in str(e.value)


def test_a_trained_model_is_needed_where_one_is_evaluated(tmp_path):
    """infer.py, gen_pseudo.py, analyze.py and the offline stages load through load_trained_segmentor: an
    ImageNet backbone file there would predict with a random head, so it is refused; as MODEL.WEIGHTS, the
    start of training, it loads (test_torchvision_state_dict_loads_into_the_backbone)."""
    cfg = cfg_of("MODEL.BACKBONE", "resnet18")
    imagenet = str(tmp_path / "resnet18-imagenet.pth")
    torch.save(_randomised_tv_resnet18().state_dict(), imagenet)
    with pytest.raises(ValueError, match=rf"{imagenet} holds backbone weights only .* a trained model is needed"):
        load_trained_segmentor(cfg, imagenet)
    trained = build_segmentor(cfg, load_weights=False)
    path = str(tmp_path / "model_final.pth")
    torch.save({"model": trained.state_dict(), "iteration": 5}, path)
    loaded = load_trained_segmentor(cfg, path)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_a_scale_that_leaves_no_pixel_is_refused():
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), load_weights=False).eval()
    images = torch.randn(1, 3, 32, 64)
    assert predict_probs(model, images, scales=[1 / 32]).shape == (1, 19, 32, 64)  # one row is enough
    with pytest.raises(ValueError, match=r"scale 0\.01 of a 64×32 input leaves no pixel"):
        predict_probs(model, images, scales=[1.0, 0.01])


def test_predict_runs_in_eval_mode_and_restores_the_mode_it_found():
    """Segmentor.predict (spcl/modeling/segmentor.py) switches to eval mode and back: BatchNorm normalises with its
    running statistics (the test protocol of docs/method.md), which a prediction leaves untouched, and a model in
    eval mode (an evaluation between training iterations, the tools) stays in eval mode afterwards."""
    from spcl.modeling import Segmentor

    torch.manual_seed(0)
    model = Segmentor(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)), nn.Conv2d(4, 3, 1))
    bn = model.backbone[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    model.train()
    out = model.predict(x)
    assert model.training
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    with torch.no_grad():  # eval-mode BN by hand: (y - running mean) / sqrt(running var + eps), affine 1, 0
        y = model.backbone[0](x)
        y = (y - stats[0][:, None, None]) / torch.sqrt(stats[1][:, None, None] + bn.eps)
        expected = F.softmax(model.head(y), dim=1)
    torch.testing.assert_close(out, expected)
    model.eval()
    model.predict(x)
    assert not model.training and not bn.training


def test_the_poly_schedule_keeps_the_head_at_its_factor_and_the_backbone_at_the_base_lr():
    """docs/method.md: the classifier trains at `head_lr_factor` × the backbone's lr (released code: 10×) at every
    iteration, not only the first: spcl.engine.lr.set_lr rescales each group by its `lr_factor`, so the backbone's
    factor must be 1 and the head's the given one."""
    from spcl.engine.lr import poly_lr, set_lr

    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"))
    opt = torch.optim.SGD(model.param_groups(1e-3, 10.0), lr=1e-3, momentum=0.9)
    lr = poly_lr(1e-3, 50, 100, 0.9)  # 1e-3 * 0.5 ** 0.9
    set_lr(opt, lr)
    backbone, head = opt.param_groups
    assert backbone["lr"] == pytest.approx(1e-3 * 0.5 ** 0.9) and head["lr"] == pytest.approx(1e-2 * 0.5 ** 0.9)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_memory_format_only_when_the_config_asks(channels_last):
    """MODEL.CHANNELS_LAST (spcl/modeling/build.py build_segmentor): the weights are put in channels-last memory
    format (NHWC) only when the config asks for it; the default keeps PyTorch's contiguous NCHW layout."""
    model = build_segmentor(cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.CHANNELS_LAST", str(channels_last)))
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in convs)
    assert all(w.is_contiguous() != channels_last for w in convs)


def test_the_discriminator_width_follows_the_config():
    """MODEL.DISC_CHANNELS is the first width of the output-space discriminator (spcl/config/defaults.py:
    64-128-256-512-1 by default, doubling per layer): build_discriminator uses the configured width."""
    d = build_discriminator(cfg_of("MODEL.NUM_CLASSES", "16", "MODEL.DISC_CHANNELS", "8"))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 8), (8, 16), (16, 32), (32, 64), (64, 1)]


def test_no_checkpoint_given_is_named_as_such():
    """load_trained_segmentor without a path (no --checkpoint, MODEL.WEIGHTS '') says that a trained model is
    needed and where to give it, instead of failing on a file named ''."""
    with pytest.raises(ValueError, match=r"a trained model is needed: give a checkpoint \(--checkpoint, or MODEL"):
        load_trained_segmentor(cfg_of("MODEL.BACKBONE", "resnet18"), "")


def test_a_trained_model_loads_in_eval_mode_and_ignores_model_weights(tmp_path):
    """load_trained_segmentor (spcl/modeling/build.py) gives the model in eval mode, the mode every tool predicts in
    (BatchNorm with its running statistics); it reads only the checkpoint given, not MODEL.WEIGHTS (the start of
    training, here a file that does not exist): build_segmentor(load_weights=False) leaves MODEL.WEIGHTS alone."""
    cfg = cfg_of("MODEL.BACKBONE", "resnet18", "MODEL.FREEZE_BN", "False",
                 "MODEL.WEIGHTS", str(tmp_path / "no-such-imagenet.pth"))
    trained = build_segmentor(cfg, load_weights=False)
    path = str(tmp_path / "model_final.pth")
    torch.save({"model": trained.state_dict(), "iteration": 5}, path)
    loaded = load_trained_segmentor(cfg, path)
    assert not any(m.training for m in loaded.modules())
