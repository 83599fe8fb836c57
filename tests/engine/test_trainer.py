"""The shared training loop, tested through stages built without an output folder: what each stage
passes as the CE temperature, the head's ×10 lr after every schedule update, exact RNG restore on
resume, and a constructor that writes nothing."""
import os
import random

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from spcl.engine.stages import TRAINERS, AdvWarmupTrainer, AlignTrainer, SelfTrainTrainer, SourceOnlyTrainer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prototypes(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("protos") / "p.pth")
    g = torch.Generator().manual_seed(0)
    torch.save({"prototypes": torch.nn.functional.normalize(torch.randn(19, 512, generator=g), dim=1)}, path)
    return path


@pytest.fixture(scope="module")
def pseudo_dir(toy_root, tmp_path_factory):
    """Pseudo labels = the target ground truth in trainIds (enough for one step)."""
    from spcl.data import build_dataset
    from spcl.data.io import write_label_png

    out = tmp_path_factory.mktemp("pseudo")
    ds = build_dataset(tiny_cfg(toy_root, str(out)), "cityscapes_train", train=False, labels="required")
    for i in range(len(ds)):
        item = ds[i]
        write_label_png(str(out / item["name"]), item["label"].numpy().astype(np.uint8))
    return str(out)


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
    cfg = tiny_cfg(toy_root, str(tmp_path))
    trainer = SourceOnlyTrainer(cfg, None, CPU)
    opt = trainer.optimizers["model"]
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    for it in (0, 7, cfg.SOURCE_ONLY.MAX_ITER - 1):
        trainer.set_learning_rates(it)
        base = cfg.SOURCE_ONLY.BASE_LR * (1 - it / cfg.SOURCE_ONLY.MAX_ITER) ** cfg.SOLVER.LR_POWER
        assert opt.param_groups[0]["lr"] == pytest.approx(base, rel=1e-12)
        assert opt.param_groups[1]["lr"] == pytest.approx(cfg.SOLVER.HEAD_LR_FACTOR * base, rel=1e-12)


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
