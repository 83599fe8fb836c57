"""SOLVER.FUSED_OPTIMIZER: every optimiser of every stage takes torch's fused kernel when asked, its
update is the default kernel's up to float rounding (in fp32, and in fp16 through the gradient scaler),
and a resumed run goes on with the kernel its config asks for, not the one its checkpoint was saved with."""
import pytest
import torch

from conftest import tiny_cfg
from spcl.engine.checkpoint import with_kernels_of
from spcl.engine.stages import TRAINERS, AdvWarmupTrainer, SourceOnlyTrainer

CPU = torch.device("cpu")
# the CUDA path runs where a GPU is (a GPU session's test run), with deterministic cuDNN kernels so that the
# two runs compared differ by the optimiser's kernel only
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def _deterministic(monkeypatch, device):
    if device == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _cfg(toy_root, out, fused, *opts):
    return tiny_cfg(toy_root, out, "SOLVER.FUSED_OPTIMIZER", str(fused), *opts)


def _batch(trainer):
    return {k: trainer._to_device(next(iter(v))) for k, v in trainer.build_loaders(0).items()}


def _assert_same_updates(fused: dict, plain: dict) -> None:
    """Every tensor's update equal to float rounding: ‖fused − plain‖ / ‖plain‖ < 1e-4 (per tensor; at most
    1e-5 in two AdamW warm-up steps on an AVX2 CPU, where a β1 of 0.8 instead of 0.9 gives 3e-2 and AdamW without its
    weight decay 6e-4, each measured in the second step). An elementwise bound would be set by the few weights whose two gradients nearly
    cancel in Adam's moments, where rounding is amplified most."""
    assert plain.keys() == fused.keys()
    for k in plain:
        assert plain[k].norm() > 0, k
        assert float((fused[k] - plain[k]).norm() / plain[k].norm()) < 1e-4, k


def _params(trainer):
    return {f"{m}.{k}": v.detach().clone() for m, module in trainer.modules.items()
            for k, v in module.named_parameters()}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("stage", sorted(TRAINERS))
def test_the_key_picks_the_kernel_of_every_optimiser_of_every_stage(stage, fused, toy_root, tmp_path, prototypes,
                                                                   pseudo_dir):
    cfg = _cfg(toy_root, str(tmp_path), fused, "PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", pseudo_dir)
    trainer = TRAINERS[stage](cfg, None, CPU)
    assert trainer.optimizers
    for name, opt in trainer.optimizers.items():
        for group in opt.param_groups:
            assert bool(group["fused"]) is fused, (stage, name, group["fused"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_steps_move_every_weight_as_the_default_kernel_does(optimizer, device, toy_root, tmp_path,
                                                                  monkeypatch):
    """Two warm-up steps (the segmentor's optimiser and D's Adam; the second step uses the moments of
    the first) from the same weights and batch: the same updates to float rounding. Before the second step
    the fused run takes the default run's weights, so that both steps see the same gradients and differ by
    the kernel only: without that, the first step's rounding changed the second step's gradients, and on
    some CPUs (AVX2 only) two free-running AdamW runs differed by 7e-4 in a BatchNorm bias."""
    _deterministic(monkeypatch, device)
    trainers = [AdvWarmupTrainer(_cfg(toy_root, str(tmp_path / str(fused)), fused, "SOLVER.OPTIMIZER", optimizer),
                                 None, torch.device(device)) for fused in (False, True)]
    batch = _batch(trainers[0])
    for step in range(2):
        before = _params(trainers[0])
        assert all(torch.equal(v, before[k]) for k, v in _params(trainers[1]).items())  # the same start
        for trainer in trainers:
            trainer.run_step(batch)
        plain, fused = ({k: v - before[k] for k, v in _params(trainer).items()} for trainer in trainers)
        assert any(k.startswith("discriminator.") for k in plain)
        _assert_same_updates(fused, plain)
        with torch.no_grad():  # the default run's weights (the moments stay each kernel's own)
            for name, module in trainers[1].modules.items():
                for k, v in module.named_parameters():
                    v.copy_(trainers[0].modules[name].get_parameter(k))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_under_fp16_the_gradient_scaler_unscales_for_the_fused_kernel_too(optimizer, device, toy_root, tmp_path,
                                                                          monkeypatch):
    """The scaler hands a fused optimiser its scale instead of unscaling the gradients first: one fp16 step
    moves every weight as the default kernel's does (a step on the scaled gradients would be 65,536 times
    too large for SGD)."""
    _deterministic(monkeypatch, device)
    deltas = []
    for fused in (False, True):
        cfg = _cfg(toy_root, str(tmp_path / str(fused)), fused, "SOLVER.OPTIMIZER", optimizer, "SOLVER.AMP", "fp16")
        trainer = SourceOnlyTrainer(cfg, None, torch.device(device))
        before = _params(trainer)
        trainer.run_step(_batch(trainer))
        deltas.append({k: v - before[k] for k, v in _params(trainer).items()})
    _assert_same_updates(*reversed(deltas))


@pytest.mark.parametrize("saved,resumed", [(False, True), (True, False)])
def test_a_resume_goes_on_with_the_kernel_its_config_asks_for(saved, resumed, toy_root, tmp_path):
    first = SourceOnlyTrainer(_cfg(toy_root, str(tmp_path), saved), str(tmp_path), CPU)
    first.run_step(_batch(first))
    first.checkpointer.save("model_0000001", 1)
    state = first.optimizers["model"].state_dict()["state"]
    second = SourceOnlyTrainer(_cfg(toy_root, str(tmp_path), resumed), str(tmp_path), CPU)
    assert second.checkpointer.resume(second.resume_from) == 1
    opt = second.optimizers["model"]
    assert all(bool(group["fused"]) is resumed for group in opt.param_groups)
    loaded = opt.state_dict()["state"]
    assert loaded.keys() == state.keys()
    for i in state:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(loaded[i][key], state[i][key]), (i, key)
    before = _params(second)
    second.run_step(_batch(second))  # the resumed kernel steps with the loaded state
    assert any(not torch.equal(v, before[k]) for k, v in _params(second).items())


def test_with_kernels_of_keeps_every_other_group_setting_and_the_state():
    w = torch.nn.Parameter(torch.ones(3))
    current = torch.optim.AdamW([w], lr=0.5, fused=True)
    saved = {"state": {0: {"step": torch.tensor(4.0)}},
             "param_groups": [{"lr": 0.1, "betas": (0.8, 0.9), "fused": None, "foreach": True, "params": [0]}]}
    out = with_kernels_of(current, saved)
    assert out["state"] is saved["state"]
    assert out["param_groups"] == [{"lr": 0.1, "betas": (0.8, 0.9), "fused": True, "foreach": None, "params": [0]}]
    assert saved["param_groups"][0]["fused"] is None  # the caller's dict is not changed


def test_with_kernels_of_keeps_a_surplus_saved_group_so_the_load_is_refused():
    """A checkpoint of an optimiser with more parameter groups (another stage's, e.g. segmentor + D in one) must
    still be refused by `load_state_dict`: dropping the saved groups the current optimiser lacks would load the
    first group's state onto this one's parameters without a word."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    saved = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.2}], lr=0.1, momentum=0.9).state_dict()
    current = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    out = with_kernels_of(current, saved)
    assert len(out["param_groups"]) == 2 and out["param_groups"][1]["lr"] == 0.2
    with pytest.raises(ValueError, match="parameter groups"):
        current.load_state_dict(out)
