"""Mixed precision (`SOLVER.AMP`) on the CPU: every stage's step runs its forward passes under autocast,
keeps the losses and the prototype bank in fp32 (docs/method.md "Schedules"), and takes an optimiser step
close to the fp32 one. fp16 goes through a gradient scaler whose state is checkpointed."""
import pytest
import torch

from conftest import tiny_cfg
from spcl.engine.stages import TRAINERS

CPU = torch.device("cpu")


def _step(stage, toy_root, out, prototypes, pseudo_dir, amp, monkeypatch=None, seen=None):
    """One run_step of `stage` from a fixed seed; returns (logs, parameter change per tensor, trainer)."""
    cls = TRAINERS[stage]
    cfg = tiny_cfg(toy_root, out, "SOLVER.AMP", amp, "PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", pseudo_dir,
                   "SOLVER.OPTIMIZER", "sgd", "MODEL.FREEZE_BN", "True")
    if seen is not None:
        module = __import__(cls.__module__, fromlist=["segmentation_ce"])
        real = module.segmentation_ce

        def spy(logits, label, *args, **kwargs):
            loss = real(logits, label, *args, **kwargs)
            seen.append((logits.dtype, loss.dtype))
            return loss

        monkeypatch.setattr(module, "segmentation_ce", spy)
    trainer = cls(cfg, None, CPU)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    batch = {k: trainer._to_device(next(iter(v))) for k, v in trainer.build_loaders(0).items()}
    logs = trainer.run_step(batch)
    delta = {k: v.detach() - before[k] for k, v in trainer.model.named_parameters()}
    return logs, delta, trainer


@pytest.mark.parametrize("stage", sorted(TRAINERS))
def test_bf16_step_keeps_losses_in_fp32_and_moves_the_weights_like_fp32(stage, toy_root, tmp_path, prototypes,
                                                                       pseudo_dir, monkeypatch):
    seen = []
    logs16, delta16, trainer = _step(stage, toy_root, str(tmp_path / "a"), prototypes, pseudo_dir, "bf16",
                                     monkeypatch, seen)
    assert seen and all(logits == torch.bfloat16 and loss == torch.float32 for logits, loss in seen), seen
    assert all(torch.isfinite(torch.tensor(v)) for v in logs16.values() if isinstance(v, float))
    if hasattr(trainer, "bank"):
        assert trainer.bank.prototypes.dtype == torch.float32
    monkeypatch.undo()
    logs32, delta32, _ = _step(stage, toy_root, str(tmp_path / "b"), prototypes, pseudo_dir, "")
    a = torch.cat([d.flatten() for d in delta16.values()])
    b = torch.cat([d.flatten() for d in delta32.values()])
    assert b.norm() > 0
    cosine = float(a @ b / (a.norm() * b.norm()))
    assert cosine > 0.95, cosine  # same direction; bf16 rounds the forward pass, nothing else differs
    assert abs(a.norm() / b.norm() - 1) < 0.1
    for key in logs32:
        if key.startswith("loss"):
            assert logs16[key] == pytest.approx(logs32[key], rel=0.05, abs=0.02), key


@pytest.mark.parametrize("stage", ["source_only", "align"])
def test_fp16_steps_through_a_gradient_scaler_whose_state_is_checkpointed(stage, toy_root, tmp_path, prototypes,
                                                                          pseudo_dir):
    """The scaled loss's gradients are unscaled before the step: the update matches fp32's in size and
    direction (a step on scaled gradients would be ~65,536 times too large)."""
    _, delta16, trainer = _step(stage, toy_root, str(tmp_path / "a"), prototypes, pseudo_dir, "fp16")
    _, delta32, _ = _step(stage, toy_root, str(tmp_path / "b"), prototypes, pseudo_dir, "")
    a = torch.cat([d.flatten() for d in delta16.values()])
    b = torch.cat([d.flatten() for d in delta32.values()])
    assert float(a @ b / (a.norm() * b.norm())) > 0.95 and abs(a.norm() / b.norm() - 1) < 0.1
    assert trainer.scaler is not None and trainer.scaler.get_scale() > 0
    assert trainer.checkpointer.state(1)["scaler"]["scale"] == trainer.scaler.get_scale()
