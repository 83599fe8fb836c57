"""The shared training loop, tested through stages built without an output folder: what each stage
passes as the CE temperature, the head's ×10 lr after every schedule update, exact RNG restore on
resume, and a constructor that writes nothing."""
import copy
import os
import random

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from spcl.engine.stages import TRAINERS, AdvWarmupTrainer, AlignTrainer, SelfTrainTrainer, SourceOnlyTrainer

CPU = torch.device("cpu")


def _batch(trainer):
    return {k: trainer._to_device(next(iter(v))) for k, v in trainer.build_loaders(0).items()}


@pytest.mark.parametrize("stage", sorted(TRAINERS))
def test_each_stage_passes_its_ce_temperature(stage, toy_root, tmp_path, prototypes, pseudo_dir, monkeypatch):
    """Warm-up, align and source-only divide the source logits by LOSS.SOURCE_TEMPERATURE (released
    code: 1.8); self-training's target CE uses no temperature."""
    cls = TRAINERS[stage]
    cfg = tiny_cfg(toy_root, str(tmp_path), "LOSS.SOURCE_TEMPERATURE", "2.5", "PROTOTYPE.PATH", prototypes,
                   "DATASETS.PSEUDO_DIR", pseudo_dir)
    module = __import__(cls.__module__, fromlist=["segmentation_ce"])
    seen = []
    real = module.segmentation_ce

    def spy(logits, label, temperature=1.0, *args, **kwargs):
        seen.append(temperature)
        return real(logits, label, temperature, *args, **kwargs)

    monkeypatch.setattr(module, "segmentation_ce", spy)
    trainer = cls(cfg, None, CPU)
    trainer.run_step(_batch(trainer))
    expected = 1.0 if cls is SelfTrainTrainer else 2.5
    assert seen == [expected]


def test_head_lr_is_ten_times_the_backbone_lr_after_every_update(toy_root, tmp_path):
    """The paper configs' factor 10 and a power other than 0.9 (the toy config's factor is 1, and 0.9 is
    `poly_lr`'s default): each must reach the optimiser's groups from the config."""
    cfg = tiny_cfg(toy_root, str(tmp_path), "SOLVER.HEAD_LR_FACTOR", "10.0", "SOLVER.LR_POWER", "2.0")
    trainer = SourceOnlyTrainer(cfg, None, CPU)
    opt = trainer.optimizers["model"]
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    for it in (0, 7, cfg.SOURCE_ONLY.MAX_ITER - 1):
        trainer.set_learning_rates(it)
        base = cfg.SOURCE_ONLY.BASE_LR * (1 - it / cfg.SOURCE_ONLY.MAX_ITER) ** cfg.SOLVER.LR_POWER
        assert opt.param_groups[0]["lr"] == pytest.approx(base, rel=1e-12)
        assert opt.param_groups[1]["lr"] == pytest.approx(10 * base, rel=1e-12)


def test_discriminator_lr_follows_its_own_base(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, str(tmp_path))
    trainer = AdvWarmupTrainer(cfg, None, CPU)
    trainer.set_learning_rates(5)
    factor = (1 - 5 / cfg.ADV_WARMUP.MAX_ITER) ** cfg.SOLVER.LR_POWER
    assert trainer.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(
        cfg.ADV_WARMUP.DISC_LR * factor, rel=1e-12)


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_draws_after_resume_equal_those_after_save(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, str(tmp_path))
    first = SourceOnlyTrainer(cfg, str(tmp_path), CPU)
    assert first.resume_from is None
    after_build = _draws()
    _draws()  # advance every generator past the states a fresh build leaves
    first.checkpointer.save("model_0000001", 1)
    expected = _draws()
    assert expected != after_build
    second = SourceOnlyTrainer(cfg, str(tmp_path), CPU)  # reseeds and builds: the state of `after_build`
    assert second.resume_from == os.path.join(str(tmp_path), "checkpoints", "model_0000001.pth")
    assert second.checkpointer.resume(second.resume_from) == 1
    assert _draws() == expected


def test_construction_writes_nothing(toy_root, tmp_path, prototypes):
    out = tmp_path / "stage"
    cfg = tiny_cfg(toy_root, str(out), "PROTOTYPE.PATH", prototypes, "LOSS.CONTRAST.TARGET", "False")
    trainer = AlignTrainer(cfg, str(out), CPU)
    assert not out.exists()
    logs = trainer.run_step(_batch(trainer))
    assert not out.exists() and "loss_cl_src" in logs
    with pytest.raises(ValueError, match="without an output folder"):
        AlignTrainer(cfg, None, CPU).train()


def test_source_and_target_loaders_draw_independent_streams(toy_root, tmp_path):
    """8 source and 8 target images: with one shared seed the two loaders would pair source image i
    with target image i at every step; named streams give two different orders, each reproducible."""
    cfg = tiny_cfg(toy_root, str(tmp_path))

    def order(trainer, name):
        it = iter(trainer.build_loaders(0)[name])
        return [i for _ in range(8) for i in next(it)["index"].tolist()]

    trainer = AdvWarmupTrainer(cfg, None, CPU)
    src, tgt = order(trainer, "source"), order(trainer, "target")
    assert sorted(src[:8]) == sorted(tgt[:8]) == list(range(8))  # each an epoch permutation
    assert src != tgt
    again = AdvWarmupTrainer(cfg, None, CPU)
    assert order(again, "source") == src and order(again, "target") == tgt


@pytest.mark.parametrize("soften", [True, False])
def test_discriminator_sees_source_maps_softened_like_the_ce(soften, toy_root, tmp_path):
    """Released `warmup.py` divides the source logits by 1.8 before the discriminator's softmax; the
    target maps go in unsoftened (ADV_WARMUP.SOFTEN_SOURCE)."""
    from spcl.losses import upsample_like

    cfg = tiny_cfg(toy_root, str(tmp_path), "LOSS.SOURCE_TEMPERATURE", "2.5", "ADV_WARMUP.SOFTEN_SOURCE", str(soften))
    trainer = AdvWarmupTrainer(cfg, None, CPU)
    logits, seen = [], []
    trainer.model_without_ddp.head.register_forward_hook(lambda m, i, o: logits.append(o.detach().clone()))
    trainer.discriminator_without_ddp.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach().clone()))
    batch = _batch(trainer)
    trainer.run_step(batch)
    src_logits, tgt_logits = logits
    size = batch["source"]["image"][:, 0]
    t = 2.5 if soften else 1.0
    expected_src = torch.softmax(upsample_like(src_logits.float() / t, size), dim=1)
    expected_tgt = torch.softmax(upsample_like(tgt_logits.float(), batch["target"]["image"][:, 0]), dim=1)
    assert len(seen) == 3  # generator (target), discriminator (source), discriminator (target)
    assert torch.allclose(seen[1], expected_src, atol=1e-6)
    assert torch.allclose(seen[0], expected_tgt, atol=1e-6) and torch.allclose(seen[2], expected_tgt, atol=1e-6)


def test_warmup_gradients_are_those_of_the_adaptsegnet_losses(toy_root, tmp_path):
    """One warm-up step leaves in the model the gradient of CE/T + ADV_WEIGHT · BCE(D(softmax(target)), source)
    with D frozen, and in D the gradient of 0.5 · BCE(D(source maps), source) + 0.5 · BCE(D(target maps),
    target) on detached maps: recomputed here with plain torch on copies taken before the step."""
    import torch.nn.functional as F

    from spcl.losses import segmentation_ce, upsample_like

    cfg = tiny_cfg(toy_root, str(tmp_path), "LOSS.SOURCE_TEMPERATURE", "2.5", "ADV_WARMUP.ADV_WEIGHT", "0.3")
    trainer = AdvWarmupTrainer(cfg, None, CPU)
    model, disc = copy.deepcopy(trainer.model_without_ddp), copy.deepcopy(trainer.discriminator_without_ddp)
    batch = _batch(trainer)
    logs = trainer.run_step(batch)
    src, tgt = batch["source"], batch["target"]

    def bce(logits, domain):  # domain 0 = source, 1 = target
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(domain)))

    logits_s = model(src["image"])["logits"]
    loss_seg = segmentation_ce(logits_s, src["label"], 2.5)
    prob_t = torch.softmax(upsample_like(model(tgt["image"])["logits"], tgt["image"][:, 0]), dim=1)
    loss_adv = 0.3 * bce(disc(prob_t), 0)
    grads = torch.autograd.grad(loss_seg + loss_adv, list(model.parameters()))
    prob_s = torch.softmax(upsample_like(logits_s.detach() / 2.5, src["image"][:, 0]), dim=1)
    loss_d = 0.5 * bce(disc(prob_s), 0) + 0.5 * bce(disc(prob_t.detach()), 1)
    d_grads = torch.autograd.grad(loss_d, list(disc.parameters()))
    assert logs["loss_seg"] == pytest.approx(loss_seg.item(), rel=1e-5)
    assert logs["loss_adv"] == pytest.approx(loss_adv.item(), rel=1e-5)
    assert logs["loss_d"] == pytest.approx(loss_d.item(), rel=1e-5)
    for (name, p), g in zip(trainer.model_without_ddp.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-7, msg=name)
    for (name, p), g in zip(trainer.discriminator_without_ddp.named_parameters(), d_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-7, msg=name)


def test_align_gradients_are_those_of_ce_plus_lambda_times_both_contrastive_terms(toy_root, tmp_path, prototypes,
                                                                                  pseudo_dir):
    """One align step leaves in the model the gradient of CE/T + λ·L_cl^s + λ·L_cl^t (paper Eq. 6), both
    contrastive terms taken with the prototypes after this step's EMA update (released order), the target
    term on the offline pseudo labels: recomputed with the readable Eq. 4 on a copy taken before the step."""
    from spcl.losses import segmentation_ce
    from spcl.losses.contrastive import contrastive_loss_reference
    from spcl.prototypes import downsample_mask, source_mask

    cfg = tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", pseudo_dir,
                   "LOSS.SOURCE_TEMPERATURE", "2.5", "LOSS.CONTRAST.WEIGHT", "2.0", "LOSS.CONTRAST.TEMPERATURE", "0.5",
                   "LOSS.CONTRAST.NORMALIZE_PROTOTYPES", "False")
    trainer = AlignTrainer(cfg, None, CPU)
    model, start = copy.deepcopy(trainer.model_without_ddp), trainer.bank.prototypes.clone()
    batch = _batch(trainer)
    logs = trainer.run_step(batch)
    protos = trainer.bank.prototypes  # updated once in the step, before its losses
    assert not torch.equal(protos, start)
    src, tgt = batch["source"], batch["target"]
    out_s, out_t = model(src["image"]), model(tgt["image"])
    loss_seg = segmentation_ce(out_s["logits"], src["label"], 2.5)
    mask_s = source_mask(src["label"], out_s["logits"].detach(), cfg.PROTOTYPE.SOURCE_MASK)
    loss_cl_s = contrastive_loss_reference(out_s["feat"], mask_s, protos, 0.5)
    mask_t = downsample_mask(tgt["label"], tuple(out_t["feat"].shape[-2:]))
    assert (mask_t != 255).any()
    loss_cl_t = contrastive_loss_reference(out_t["feat"], mask_t, protos, 0.5)
    grads = torch.autograd.grad(loss_seg + 2.0 * loss_cl_s + 2.0 * loss_cl_t, list(model.parameters()),
                                allow_unused=True)
    assert logs["loss_seg"] == pytest.approx(loss_seg.item(), rel=1e-5)
    assert logs["loss_cl_src"] == pytest.approx(loss_cl_s.item(), rel=1e-5)
    assert logs["loss_cl_tgt"] == pytest.approx(loss_cl_t.item(), rel=1e-5)
    for (name, p), g in zip(trainer.model_without_ddp.named_parameters(), grads):
        # against the tensor's largest entry: the fast and the readable loss sum in other orders (measured
        # 1.6e-6 of it; a term dropped or weighted 1 instead of λ moves it by 0.2-0.5)
        assert (p.grad - g).abs().max() <= 1e-4 * g.abs().max(), name


@pytest.mark.parametrize("lam", [1.0, 2.0])
def test_align_logs_the_gradient_each_term_sends_to_the_features(lam, toy_root, tmp_path, prototypes,
                                                                  pseudo_dir):
    """grad_feat_cl_src = ‖∂(λ·L_cl^s)/∂F‖ and grad_feat_seg = ‖∂L_seg/∂F‖ on the source feature map,
    recomputed here with the readable loss, and their ratio is what is logged."""
    from spcl.losses import segmentation_ce
    from spcl.losses.contrastive import contrastive_loss_reference
    from spcl.prototypes import downsample_mask

    cfg = tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", pseudo_dir,
                   "SOLVER.LOG_PERIOD", "1", "LOSS.CONTRAST.WEIGHT", str(lam), "LOSS.CONTRAST.TEMPERATURE", "0.5",
                   "LOSS.CONTRAST.NORMALIZE_PROTOTYPES", "False")
    trainer = AlignTrainer(cfg, None, CPU)
    head = copy.deepcopy(trainer.model_without_ddp.head)  # the classifier as it is during the step
    feats = []
    trainer.model_without_ddp.backbone.register_forward_hook(lambda m, i, o: feats.append(o.detach().clone()))
    batch = _batch(trainer)
    logs = trainer.run_step(batch)
    protos = trainer.bank.prototypes  # updated once, before the loss (released order)
    f = feats[0].clone().requires_grad_(True)
    mask = downsample_mask(batch["source"]["label"], tuple(f.shape[-2:]))
    (g_cl,) = torch.autograd.grad(lam * contrastive_loss_reference(f, mask, protos, 0.5), f)
    (g_seg,) = torch.autograd.grad(segmentation_ce(head(f), batch["source"]["label"], cfg.LOSS.SOURCE_TEMPERATURE), f)
    assert logs["grad_feat_cl_src"] == pytest.approx(g_cl.norm().item(), rel=1e-4)
    assert logs["grad_feat_seg"] == pytest.approx(g_seg.norm().item(), rel=1e-4)
    assert logs["grad_ratio_src"] == pytest.approx(logs["grad_feat_cl_src"] / logs["grad_feat_seg"], rel=1e-9)
    assert logs["grad_feat_cl_tgt"] > 0 and logs["grad_ratio_tgt"] == pytest.approx(
        logs["grad_feat_cl_tgt"] / logs["grad_feat_seg"], rel=1e-9)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_key_builds_that_optimizer_with_the_head_factor(name, cls, toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, str(tmp_path), "SOLVER.OPTIMIZER", name, "SOLVER.HEAD_LR_FACTOR", "10.0")
    opt = SourceOnlyTrainer(cfg, None, CPU).optimizers["model"]
    assert type(opt) is cls
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * opt.param_groups[0]["lr"])
    if name == "adamw":
        assert opt.param_groups[0]["betas"] == (cfg.SOLVER.MOMENTUM, 0.999)


def _bn_stats(model):
    return [(m.running_mean.clone(), m.running_var.clone()) for m in model.modules()
            if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("mode", ["target", "all"])
@pytest.mark.parametrize("cls", [AdvWarmupTrainer, AlignTrainer])
def test_two_domain_stages_leave_bn_running_statistics_to_the_target_pass(cls, mode, toy_root, tmp_path,
                                                                         prototypes, pseudo_dir):
    """MODEL.BN_RUNNING_STATS "target": after a step, every trainable BN's running statistics are those
    a pass of the target batch alone would leave (the source pass normalises with its batch statistics
    but updates nothing); "all": those of the source pass followed by the target pass. Both passes run
    before the optimiser step, so a copy of the model taken before the step reproduces them."""
    cfg = tiny_cfg(toy_root, str(tmp_path), "MODEL.BN_RUNNING_STATS", mode, "PROTOTYPE.PATH", prototypes,
                   "DATASETS.PSEUDO_DIR", pseudo_dir)
    assert not cfg.MODEL.FREEZE_BN
    trainer = cls(cfg, None, CPU)
    batch = _batch(trainer)
    ref = copy.deepcopy(trainer.model_without_ddp).train()
    start = _bn_stats(ref)
    with torch.no_grad():
        if mode == "all":
            ref(batch["source"]["image"])
        ref(batch["target"]["image"])
    trainer.run_step(batch)
    got, expected = _bn_stats(trainer.model_without_ddp), _bn_stats(ref)
    assert len(got) > 10
    assert any(not torch.equal(m0, m1) for (m0, _), (m1, _) in zip(start, got))
    for (m1, v1), (m2, v2) in zip(got, expected):
        assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5, rtol=1e-4)


def test_align_refuses_prototypes_of_another_shape_before_training(toy_root, tmp_path):
    """Prototypes written for another backbone (here 256 channels against the ResNet-18's 512)."""
    path = str(tmp_path / "p256.pth")
    torch.save({"prototypes": torch.randn(19, 256)}, path)
    with pytest.raises(ValueError, match=r"p256\.pth holds \(19, 256\) prototypes; this model needs \(19, 512\)"):
        AlignTrainer(tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", path), None, CPU)


@pytest.mark.parametrize("change", ["none", "removed", "renamed"])
def test_a_resume_whose_data_changed_says_it_is_not_exact(change, toy_root, tmp_path, spcl_log):
    """Checkpoints record what the loaders read (item count and a hash of the items in order). A resume after
    source files were removed or renamed, the config unchanged, used to be silent although its sample stream
    differs from an uninterrupted run's: it warns, naming the loader and the counts, and goes on."""
    import shutil

    from spcl.engine.trainer import data_record

    root = tmp_path / "data"
    shutil.copytree(toy_root, root)
    out = str(tmp_path / "stage")
    cfg = tiny_cfg(str(root), out, "DATASETS.PREFLIGHT", "False")
    SourceOnlyTrainer(cfg, out, CPU).train()  # 3 iterations: model_0000002.pth and model_final.pth
    os.remove(os.path.join(out, "checkpoints", "model_final.pth"))  # resume from iteration 2
    images, labels = root / "gta5" / "images", root / "gta5" / "labels"
    if change == "removed":
        os.remove(images / "00003.png")
        os.remove(labels / "00003.png")
    elif change == "renamed":
        os.rename(images / "00003.png", images / "00103.png")
        os.rename(labels / "00003.png", labels / "00103.png")
    second = SourceOnlyTrainer(cfg, out, CPU)
    assert second.resume_from.endswith("model_0000002.pth")
    second.train()
    said = [line for line in spcl_log.text.splitlines() if "changed since that checkpoint" in line]
    if change == "none":
        assert said == []
    else:
        now = 7 if change == "removed" else 8
        assert len(said) == 1 and f"source (8 items then, {now} now)" in said[0] and "not exact" in said[0]
    # the record does not depend on where the dataset folder is (DATASETS.DATA_DIR may move)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    records = [data_record(SourceOnlyTrainer(tiny_cfg(str(r), out), None, CPU).build_loaders(0)) for r in (root, moved)]
    assert records[0] == records[1] and records[0]["source"]["items"] == (7 if change == "removed" else 8)


@pytest.mark.parametrize("cls", [SourceOnlyTrainer, SelfTrainTrainer])
def test_single_domain_steps_follow_the_gradient_of_their_batch_ce(cls, toy_root, tmp_path, pseudo_dir):
    """source_only: CE of the source logits / LOSS.SOURCE_TEMPERATURE against the source labels; self_train
    (paper Sec. 3.4, docs/method.md "Self-training"): plain CE against the batch's pseudo labels. Two steps:
    the first moves the parameters, and the gradient the second leaves is that of its own batch alone (cleared
    in between), recomputed with plain torch on a copy of the model taken between the two steps."""
    import torch.nn.functional as F

    from spcl.losses import upsample_like

    cfg = tiny_cfg(toy_root, str(tmp_path), "DATASETS.PSEUDO_DIR", pseudo_dir, "LOSS.SOURCE_TEMPERATURE", "2.5")
    trainer = cls(cfg, None, CPU)
    domain, t = ("source", 2.5) if cls is SourceOnlyTrainer else ("target", 1.0)
    stream = iter(trainer.build_loaders(0)[domain])
    start = copy.deepcopy(trainer.model_without_ddp)
    trainer.run_step({domain: trainer._to_device(next(stream))})
    moved = [name for (name, p), p0 in zip(trainer.model_without_ddp.named_parameters(), start.parameters())
             if not torch.equal(p, p0)]
    assert moved == [name for name, _ in start.named_parameters()]
    model = copy.deepcopy(trainer.model_without_ddp)
    batch = trainer._to_device(next(stream))
    label = batch["label"]
    assert (label != 255).any()
    logs = trainer.run_step({domain: batch})
    logits = upsample_like(model(batch["image"])["logits"], label) / t
    loss = F.cross_entropy(logits, label, ignore_index=255)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert logs["loss_seg" if cls is SourceOnlyTrainer else "loss_seg_tgt"] == pytest.approx(loss.item(), rel=1e-5)
    for (name, p), g in zip(trainer.model_without_ddp.named_parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("cls,model_freeze_bn,trains_bn", [(SelfTrainTrainer, True, True),
                                                          (SourceOnlyTrainer, True, False),
                                                          (SourceOnlyTrainer, False, True)])
def test_self_training_trains_batchnorm_whatever_model_freeze_bn(cls, model_freeze_bn, trains_bn, toy_root, tmp_path,
                                                                  pseudo_dir):
    """SELF_TRAIN.FREEZE_BN False overrides MODEL.FREEZE_BN True (the paper configs' setting for the other
    stages; released `train_ssl.py` trains BatchNorm, docs/method.md "Self-training"); source_only follows
    MODEL.FREEZE_BN. Trained BN: nn.BatchNorm2d layers whose running statistics a step moves; frozen:
    none (FrozenBatchNorm2d)."""
    cfg = tiny_cfg(toy_root, str(tmp_path), "DATASETS.PSEUDO_DIR", pseudo_dir, "MODEL.FREEZE_BN", str(model_freeze_bn))
    assert not cfg.SELF_TRAIN.FREEZE_BN
    trainer = cls(cfg, None, CPU)
    start = _bn_stats(trainer.model_without_ddp)
    assert (len(start) > 10) == trains_bn and (len(start) == 0) == (not trains_bn)
    trainer.run_step(_batch(trainer))
    after = _bn_stats(trainer.model_without_ddp)
    assert all(not torch.equal(m0, m1) and not torch.equal(v0, v1) for (m0, v0), (m1, v1) in zip(start, after))


def test_self_training_reads_random_crops_of_the_pseudo_labelled_target(toy_root, tmp_path, pseudo_dir):
    """The self_train batches are INPUT.SELF_TRAIN_CROP crops (W×H) of the target images rescaled around
    INPUT.SELF_TRAIN_BASE_SIZE (released `train_ssl.py`; docs/method.md "Self-training"), with the
    pseudo labels cropped alike, not the whole images at INPUT.TARGET_SIZE of warm-up and align."""
    cfg = tiny_cfg(toy_root, str(tmp_path), "DATASETS.PSEUDO_DIR", pseudo_dir, "INPUT.SELF_TRAIN_BASE_SIZE", "[64, 32]",
                   "INPUT.SELF_TRAIN_CROP", "[40, 16]", "INPUT.TARGET_SIZE", "[64, 32]")
    batch = _batch(SelfTrainTrainer(cfg, None, CPU))["target"]
    assert batch["image"].shape[-2:] == (16, 40) and batch["label"].shape[-2:] == (16, 40)


def test_align_logs_the_target_term_gradient_the_kept_fraction_and_the_prototype_drift(toy_root, tmp_path, prototypes,
                                                                                        pseudo_dir):
    """grad_feat_cl_tgt = ‖∂(λ·L_cl^t)/∂F_t‖ on the target feature map (λ = 2 here), target_kept = the share
    of target feature pixels the mask keeps, and proto_drift = the mean over classes of ‖p_k(after) − p_k(before)‖
    of this step's EMA update (module docstring of spcl/engine/stages/align.py), recomputed here. The pseudo
    labels here ignore the top quarter of every image."""
    from PIL import Image

    from spcl.data.io import write_label_png
    from spcl.losses.contrastive import contrastive_loss_reference
    from spcl.prototypes import downsample_mask

    partial = tmp_path / "pseudo"
    for name in os.listdir(pseudo_dir):
        label = np.array(Image.open(os.path.join(pseudo_dir, name)))
        label[:label.shape[0] // 4] = 255
        write_label_png(str(partial / name), label)
    cfg = tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", str(partial),
                   "SOLVER.LOG_PERIOD", "1", "LOSS.CONTRAST.WEIGHT", "2.0", "LOSS.CONTRAST.TEMPERATURE", "0.5",
                   "LOSS.CONTRAST.NORMALIZE_PROTOTYPES", "False")
    trainer = AlignTrainer(cfg, None, CPU)
    start = trainer.bank.prototypes.clone()
    feats = []
    trainer.model_without_ddp.backbone.register_forward_hook(lambda m, i, o: feats.append(o.detach().clone()))
    batch = _batch(trainer)
    logs = trainer.run_step(batch)
    protos = trainer.bank.prototypes
    f = feats[1].clone().requires_grad_(True)  # the target pass's feature map
    mask = downsample_mask(batch["target"]["label"], tuple(f.shape[-2:]))
    assert (mask == 255).any() and (mask != 255).any()
    (g_cl,) = torch.autograd.grad(2.0 * contrastive_loss_reference(f, mask, protos, 0.5), f)
    assert logs["grad_feat_cl_tgt"] == pytest.approx(g_cl.norm().item(), rel=1e-4)
    assert logs["target_kept"] == pytest.approx((mask != 255).sum().item() / mask.numel(), rel=1e-6)
    drift = sum((protos[k] - start[k]).norm().item() for k in range(len(start))) / len(start)
    assert drift > 0 and logs["proto_drift"] == pytest.approx(drift, rel=1e-5)


def test_align_follows_the_configured_source_mask_absent_policy_and_prototype_normalisation(toy_root, tmp_path,
                                                                                           prototypes, pseudo_dir):
    """PROTOTYPE.SOURCE_MASK gt_and_pred (released code: misclassified source pixels dropped), PROTOTYPE.ABSENT
    decay (released `train_ours.py`: a class absent from the batch shrinks by α) and
    LOSS.CONTRAST.NORMALIZE_PROTOTYPES True (the paper's unit-sphere prototypes) reach the align step
    (docs/method.md "Prototypes", Eq. 3-4): the bank after one step is a PrototypeBank of those settings updated
    with the source features under that mask, and L_cl^s is Eq. 4 with that mask and the updated prototypes
    divided by their norms."""
    from spcl.losses.contrastive import contrastive_loss_reference
    from spcl.prototypes import PrototypeBank, source_mask

    cfg = tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", pseudo_dir,
                   "PROTOTYPE.SOURCE_MASK", "gt_and_pred", "PROTOTYPE.ABSENT", "decay", "PROTOTYPE.ALPHA", "0.3",
                   "LOSS.CONTRAST.TEMPERATURE", "0.5", "LOSS.CONTRAST.NORMALIZE_PROTOTYPES", "True")
    trainer = AlignTrainer(cfg, None, CPU)
    model = copy.deepcopy(trainer.model_without_ddp)
    ref = PrototypeBank(19, 512, 0.3, "decay")
    ref.set(trainer.bank.prototypes.clone())
    batch = _batch(trainer)
    logs = trainer.run_step(batch)
    label = batch["source"]["label"]
    out = model(batch["source"]["image"])
    mask = source_mask(label, out["logits"].detach(), "gt_and_pred")
    gt = source_mask(label, out["logits"].detach(), "gt")
    assert not torch.equal(mask, gt)  # some labelled pixels are mispredicted
    counts = ref.update(out["feat"].detach(), mask)
    assert (counts == 0).any() and (counts > 0).any()  # absent classes: decay and keep differ
    torch.testing.assert_close(trainer.bank.prototypes, ref.prototypes, rtol=1e-4, atol=1e-6)
    unit = torch.nn.functional.normalize(ref.prototypes, dim=1)
    expected = contrastive_loss_reference(out["feat"], mask, unit, 0.5)
    assert logs["loss_cl_src"] == pytest.approx(expected.item(), rel=1e-5)


def test_align_target_mask_online_keeps_confident_pixels_of_this_batch_alone(toy_root, tmp_path, prototypes):
    """ALIGN.TARGET_MASK online (docs/method.md "Align", Eq. 5): a pixel keeps its predicted class if its
    softmax confidence reaches min(median confidence of the batch's pixels of that class, PSEUDO.THRESHOLD_CAP),
    thresholds from the current batch only. Hand-made logits, one image of 1×10 pixels: class 0 at confidences
    0.3, 0.6, 0.95 ×3 (median 0.95, capped at 0.9: the three 0.95 kept), class 1 at 0.3, 0.92, 0.97 ×3 (capped at
    0.9: 0.92 kept too). The same batch after another one gives the same mask."""
    import math

    cfg = tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", prototypes, "ALIGN.TARGET_MASK", "online",
                   "PSEUDO.THRESHOLD_CAP", "0.9")
    trainer = AlignTrainer(cfg, None, CPU)

    def logits(classes_and_confidences):
        out = torch.zeros(1, 19, 1, len(classes_and_confidences))
        for i, (k, c) in enumerate(classes_and_confidences):
            out[0, k, 0, i] = math.log(18 * c / (1 - c))  # softmax of (a, 0 ×18) at class k = c
        return out

    batch = logits([(0, 0.3), (0, 0.6), (0, 0.95), (0, 0.95), (0, 0.95),
                    (1, 0.3), (1, 0.92), (1, 0.97), (1, 0.97), (1, 0.97)])
    expected = [[[255, 255, 0, 0, 0, 255, 1, 1, 1, 1]]]
    assert trainer.target_mask({}, batch).tolist() == expected
    other = logits([(0, 0.2)] * 5 + [(1, 0.99)] * 5)
    assert trainer.target_mask({}, other).tolist() == [[[0] * 5 + [1] * 5]]
    assert trainer.target_mask({}, batch).tolist() == expected


def test_a_resumed_align_takes_its_prototypes_from_the_checkpoint_not_the_file(toy_root, tmp_path, prototypes,
                                                                               pseudo_dir):
    """The bank is saved in every checkpoint (module docstring of spcl/engine/stages/align.py): a resumed align
    restores the EMA-updated prototypes and does not read PROTOTYPE.PATH again (here it is gone)."""
    import shutil

    protos = str(tmp_path / "p.pth")
    shutil.copy(prototypes, protos)
    out = str(tmp_path / "stage")
    cfg = tiny_cfg(toy_root, out, "PROTOTYPE.PATH", protos, "DATASETS.PSEUDO_DIR", pseudo_dir)
    first = AlignTrainer(cfg, out, CPU)
    first.run_step(_batch(first))
    first.checkpointer.save("model_0000001", 1)
    saved = first.bank.prototypes.clone()
    assert not torch.equal(saved, torch.load(protos, weights_only=True)["prototypes"])
    os.remove(protos)
    second = AlignTrainer(cfg, out, CPU)
    assert second.checkpointer.resume(second.resume_from) == 1
    assert torch.equal(second.bank.prototypes, saved)


def test_the_periodic_evaluation_follows_the_test_keys(toy_root, tmp_path, monkeypatch):
    """The stage's target-val evaluation is the test protocol of the config, as tools/test.py runs it:
    the first TEST.NUM_IMAGES images, TEST.SCALES, TEST.FLIP, sliding windows (TEST.SLIDING) and the
    SOLVER.AMP dtype; the set is read once however often the stage evaluates."""
    import spcl.engine.trainer as trainer_module

    seen = []

    def spy(model, loader, num_classes, device, scales, flip, **kwargs):
        seen.append((loader, [item[0] for item in loader.dataset.items], scales, flip, kwargs))
        return {"mIoU": 1.0}

    monkeypatch.setattr(trainer_module, "run_inference", spy)
    cfg = tiny_cfg(toy_root, str(tmp_path), "TEST.NUM_IMAGES", "2", "TEST.SCALES", "[0.5, 1.0]", "TEST.FLIP", "True",
                   "TEST.SLIDING", "True", "SOLVER.AMP", "bf16")
    trainer = SourceOnlyTrainer(cfg, None, CPU)
    trainer.evaluate()
    trainer.evaluate()
    (loader, images, scales, flip, kwargs), again = seen
    whole = trainer_module.build_dataset(cfg, cfg.DATASETS.TEST, train=False).items
    assert len(whole) == 4 and images == [image for image, _ in whole[:2]]
    assert list(scales) == [0.5, 1.0] and flip is True
    assert kwargs["amp_dtype"] == torch.bfloat16 and kwargs["logits_fn"] is not None
    assert again[0] is loader
    plain = SourceOnlyTrainer(tiny_cfg(toy_root, str(tmp_path)), None, CPU)
    plain.evaluate()
    _, images, scales, flip, kwargs = seen[-1]
    assert len(images) == 4 and list(scales) == [1.0] and flip is False
    assert kwargs["amp_dtype"] is None and kwargs["logits_fn"] is None


def test_each_log_record_holds_the_means_of_its_own_window_and_the_last_iteration_is_logged(toy_root, tmp_path,
                                                                                           monkeypatch, spcl_log):
    """SOLVER.LOG_PERIOD 2 over 5 iterations: records at iterations 2, 4 and 5 (the last one, though the period
    does not divide it), each the mean of the losses since the record before (scripted loss 1, 2, …, 5); the lr
    of the iteration's poly step with the head's at SOLVER.HEAD_LR_FACTOR × it; s/it and the eta from a clock
    that advances 10 s per reading (eta = s/it × the iterations left). Modules left in eval mode by a caller
    train in train mode."""
    import json
    import types

    import spcl.engine.trainer as trainer_module

    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    real = SourceOnlyTrainer.run_step
    modes = []

    def scripted(self, batch):
        modes.append(self.model.training)
        return {**real(self, batch), "loss_seg": float(self.iteration + 1)}

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", scripted)
    out = str(tmp_path / "stage")
    cfg = tiny_cfg(toy_root, out, "SOURCE_ONLY.STOP_ITER", "5", "SOLVER.LOG_PERIOD", "2", "SOLVER.HEAD_LR_FACTOR",
                   "10.0", "SOLVER.CHECKPOINT_PERIOD", "0", "DATASETS.PREFLIGHT", "False")
    trainer = SourceOnlyTrainer(cfg, out, CPU)
    trainer.model_without_ddp.eval()
    trainer.train()
    assert modes == [True] * 5
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [r for r in map(json.loads, f) if "loss_seg" in r]
    assert [r["iteration"] for r in rows] == [2, 4, 5]
    assert [r["loss_seg"] for r in rows] == [1.5, 3.5, 5.0]
    for r in rows:
        lr = cfg.SOURCE_ONLY.BASE_LR * (1 - (r["iteration"] - 1) / cfg.SOURCE_ONLY.MAX_ITER) ** cfg.SOLVER.LR_POWER
        assert r["lr"] == pytest.approx(lr, rel=1e-12) and r["lr_head"] == pytest.approx(10 * lr, rel=1e-12)
    # clock readings 0 (start), then 10, 20, 30 at the three records: 10/2, 20/4, 30/5 s per iteration
    assert [r["sec_per_iter"] for r in rows] == [5.0, 5.0, 6.0]
    lines = [line for line in spcl_log.text.splitlines() if "[source_only] iter " in line]
    assert [line.split("s/it  eta: ")[1].split()[0] for line in lines] == ["0:00:15", "0:00:05", "0:00:00"]
    assert [line.split("iter ")[1].split()[0] for line in lines] == ["2/5", "4/5", "5/5"]


def test_the_stage_config_record_names_what_made_its_checkpoints(toy_root, tmp_path):
    """train() records the config in the stage folder (spcl.utils.env.write_run_info): a stage resumed from
    its checkpoint with an allowed change keeps config.yaml, the config that made that checkpoint, and writes
    the new one beside it; a stage that starts afresh where an earlier attempt made nothing (a config.yaml
    alone) takes config.yaml for its own config and keeps the unused one as config_unused_<time>.yaml."""
    from spcl.utils.env import write_run_info

    out = str(tmp_path / "resumed")
    first = tiny_cfg(toy_root, out, "DATASETS.PREFLIGHT", "False")
    SourceOnlyTrainer(first, out, CPU).train()
    os.remove(os.path.join(out, "checkpoints", "model_final.pth"))  # resume from iteration 2
    changed = tiny_cfg(toy_root, out, "DATASETS.PREFLIGHT", "False", "SOURCE_ONLY.BASE_LR", "0.02",
                       "PIPELINE.ALLOW_CONFIG_CHANGE", "True")
    second = SourceOnlyTrainer(changed, out, CPU)
    assert second.resume_from.endswith("model_0000002.pth")
    second.train()
    with open(os.path.join(out, "config.yaml")) as f:
        assert f.read() == first.dump()
    beside = [n for n in os.listdir(out) if n.startswith("config_")]
    assert len(beside) == 1 and not beside[0].startswith("config_unused_")
    with open(os.path.join(out, beside[0])) as f:
        assert f.read() == changed.dump()

    out = str(tmp_path / "fresh")
    unused = tiny_cfg(toy_root, out, "DATASETS.PREFLIGHT", "False", "SOURCE_ONLY.STOP_ITER", "1")
    write_run_info(unused, out)
    cfg = tiny_cfg(toy_root, out, "DATASETS.PREFLIGHT", "False", "SOURCE_ONLY.STOP_ITER", "1", "SOURCE_ONLY.BASE_LR",
                   "0.02")
    SourceOnlyTrainer(cfg, out, CPU).train()
    with open(os.path.join(out, "config.yaml")) as f:
        assert f.read() == cfg.dump()
    beside = [n for n in os.listdir(out) if n.startswith("config_")]
    assert len(beside) == 1 and beside[0].startswith("config_unused_")


def test_model_weights_initialise_a_fresh_stage_and_are_not_read_on_resume(toy_root, tmp_path):
    """MODEL.WEIGHTS is loaded when the stage starts afresh; a stage that resumes takes its weights from the
    checkpoint and does not read MODEL.WEIGHTS again (here deleted after the checkpoint was written)."""
    weights = str(tmp_path / "init.pth")
    state = SourceOnlyTrainer(tiny_cfg(toy_root, str(tmp_path / "x")), None, CPU).model_without_ddp.state_dict()
    state = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}
    torch.save({"model": state}, weights)
    out = str(tmp_path / "stage")
    cfg = tiny_cfg(toy_root, out, "MODEL.WEIGHTS", weights)
    first = SourceOnlyTrainer(cfg, out, CPU)
    loaded = first.model_without_ddp.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    first.run_step(_batch(first))
    first.checkpointer.save("model_0000001", 1)
    trained = copy.deepcopy(first.model_without_ddp.state_dict())
    os.remove(weights)
    second = SourceOnlyTrainer(cfg, out, CPU)
    assert second.checkpointer.resume(second.resume_from) == 1
    resumed = second.model_without_ddp.state_dict()
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)


@pytest.mark.parametrize("stop", ["ctrl_c", "signal"])
def test_a_stage_stopped_in_training_leaves_tensorboard_with_every_record_so_far(stop, toy_root, tmp_path,
                                                                                  monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in iteration 3, or a stop signal after iteration 2: the stage's EventWriter is
    closed (metrics.json fsynced, TensorBoard flushed) before the error leaves the stage, once, and its event
    file holds the records of iterations 1 and 2, as metrics.json does."""
    import json
    import signal

    from conftest import tb_scalars
    from spcl.engine.events import EventWriter
    from spcl.utils.signals import Preempted

    real = SourceOnlyTrainer.run_step

    def step(self, batch):
        if stop == "ctrl_c" and self.iteration == 2:
            raise KeyboardInterrupt
        logs = real(self, batch)
        if stop == "signal" and self.iteration == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return logs

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", step)
    closed = []
    real_close = EventWriter.close

    def close(self, *args):
        closed.append(self.folder)
        return real_close(self, *args)

    monkeypatch.setattr(EventWriter, "close", close)
    out = str(tmp_path / "stage")
    cfg = tiny_cfg(toy_root, out, "SOURCE_ONLY.STOP_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "0",
                   "SOLVER.STOP_SIGNALS", "['SIGUSR1']", "DATASETS.PREFLIGHT", "False")
    with pytest.raises(KeyboardInterrupt if stop == "ctrl_c" else Preempted):
        SourceOnlyTrainer(cfg, out, CPU).train()
    assert closed == [out]
    with open(os.path.join(out, "metrics.json")) as f:
        logged = [r["loss_seg"] for r in map(json.loads, f)]
    assert len(logged) == 2
    assert tb_scalars(os.path.join(out, "tb"))["source_only/loss_seg"] == pytest.approx(logged, rel=1e-6)


def test_resume_points_are_saved_before_the_last_iteration_each_after_its_records_are_synced(toy_root, tmp_path,
                                                                                            monkeypatch):
    """SOLVER.CHECKPOINT_PERIOD 2 over 4 iterations: one resume point, model_0000002.pth, written after
    metrics.json was made durable (EventWriter.sync: a resume after a machine crash finds every record up to
    it); at iteration 4 only model_final.pth, no periodic checkpoint of the same weights."""
    from spcl.engine.checkpoint import Checkpointer
    from spcl.engine.events import EventWriter

    calls = []
    sync, save = EventWriter.sync, Checkpointer.save
    monkeypatch.setattr(EventWriter, "sync", lambda self: (calls.append("sync"), sync(self))[1])
    monkeypatch.setattr(Checkpointer, "save", lambda self, name, *a, **k: (calls.append(name), save(self, name, *a,
                                                                                                     **k))[1])
    out = str(tmp_path / "stage")
    cfg = tiny_cfg(toy_root, out, "SOURCE_ONLY.STOP_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
                   "SOLVER.KEEP_CHECKPOINTS", "5", "DATASETS.PREFLIGHT", "False")
    SourceOnlyTrainer(cfg, out, CPU).train()
    periodic = [i for i, c in enumerate(calls) if c.startswith("model_0")]
    assert [calls[i] for i in periodic] == ["model_0000002"] and periodic[0] > 0 and calls[periodic[0] - 1] == "sync"
    assert sorted(f for f in os.listdir(os.path.join(out, "checkpoints")) if f.endswith(".pth")) == \
        ["model_0000002.pth", "model_final.pth"]
