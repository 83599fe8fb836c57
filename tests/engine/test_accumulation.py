"""Gradient accumulation (SOLVER.ACCUM_STEPS): k micro-batches of B/k give the weights of one batch of
B (frozen BN, no ignored pixels), the loaders feed iteration i the same samples for every k (also
after a resume), and the whole loop runs with it."""
import copy
import warnings

import pytest
import torch

from conftest import tiny_cfg
from spcl.engine.stages import AdvWarmupTrainer, SourceOnlyTrainer

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def plain_convolutions():
    """The comparisons below allow float32 summation order only. On CPUs with AVX-512 BF16, oneDNN's
    float32 convolution backward sometimes returns weight gradients off by 1e-4 to 2e-3 of their largest
    entry, for a batch of 4 as for a batch of 1 (measured against float64: 3e-7 with PyTorch's own
    kernels, on every draw); on AVX2 machines it does not. The test is about accumulation, so it runs
    without oneDNN."""
    with warnings.catch_warnings():  # flags() also sets oneDNN's TF32 switch, which warns on CPU-only builds
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _cfg(toy_root, out, stage, k, *opts):
    node = stage.NODE
    batch = ["SOURCE_ONLY.SOURCE_BATCH", "4"] if node == "SOURCE_ONLY" else \
        ["ADV_WARMUP.SOURCE_BATCH", "4", "ADV_WARMUP.TARGET_BATCH", "4"]
    return tiny_cfg(toy_root, out, "MODEL.FREEZE_BN", "True", "SOLVER.OPTIMIZER", "sgd", "SOLVER.ACCUM_STEPS", str(k),
                    *batch, *opts)


def _global_batches(n, seed=0):
    """n random global batches of 4 (images 32×64, labels without ignored pixels)."""
    g = torch.Generator().manual_seed(seed)
    return [{dom: {"image": torch.randn(4, 3, 32, 64, generator=g),
                   "label": torch.randint(0, 19, (4, 32, 64), generator=g)} for dom in ("source", "target")}
            for _ in range(n)]


def _split(batch, k):
    step = 4 // k
    return [{dom: {key: v[j * step:(j + 1) * step] for key, v in d.items()} for dom, d in batch.items()}
            for j in range(k)]


def _state(trainer):
    return {f"{name}.{k}": v.clone() for name, m in trainer.modules.items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("stage,k", [(SourceOnlyTrainer, 2), (SourceOnlyTrainer, 4), (AdvWarmupTrainer, 2)],
                         ids=["source_only-2", "source_only-4", "adv_warmup-2"])
def test_micro_batches_give_the_weights_of_one_large_batch(stage, k, toy_root, tmp_path):
    batches = _global_batches(2)
    one = stage(_cfg(toy_root, str(tmp_path / "one"), stage, 1), None, CPU)
    acc = stage(_cfg(toy_root, str(tmp_path / "acc"), stage, k), None, CPU)
    start = _state(one)
    assert all(torch.equal(v, _state(acc)[n]) for n, v in start.items())  # same seed, same init
    grads = {id(one): [], id(acc): []}
    for t in (one, acc):  # the gradients each optimiser step sees
        def spy(t=t, orig=t.step):
            if t._micro == t.accum_steps - 1:
                grads[id(t)].append({f"{name}.{n}": p.grad.clone() for name, m in t.modules.items()
                                     for n, p in m.named_parameters() if p.grad is not None})
            orig()
        t.step = spy
    logs_one, logs_acc = [], []
    for b in batches:  # two iterations: the second also checks the momentum / Adam state
        one.set_learning_rates(1), acc.set_learning_rates(1)
        logs_one.append(one.train_step([b]))
        logs_acc.append(acc.train_step(_split(b, k)))
    assert len(grads[id(one)]) == len(grads[id(acc)]) == 2  # one optimiser step per iteration
    for it, (g1, gk) in enumerate(zip(grads[id(one)], grads[id(acc)])):
        assert g1.keys() == gk.keys() and len(g1) > 10
        for n, g in g1.items():
            # the segmentor's gradients: rtol 1e-5. The discriminator's last layers sum many terms of
            # both signs (float32 order of k partial sums: ~3e-5 of the tensor's largest entry), and
            # iteration 2 of adv_warmup starts from discriminators that differ by Adam's rounding (below)
            tol = 1e-5 if n.startswith("model.") and (it == 0 or stage is SourceOnlyTrainer) else 1e-3 if it else 2e-4
            torch.testing.assert_close(gk[n], g, rtol=tol, atol=tol * g.abs().max().item(),
                                       msg=lambda m, n=n, it=it: f"{n} (iteration {it + 1}): {m}")
    end_one, end_acc = _state(one), _state(acc)
    changed = 0
    for n, v in end_one.items():
        if n.startswith("discriminator."):
            # Adam's first steps are ~lr·sign(g): where g ≈ 0 its rounding flips the step; a fraction of lr
            assert (end_acc[n] - v).abs().max() <= 0.1 * one.scfg.DISC_LR, n  # its gradients are checked above
        else:  # SGD: the update is linear in the gradient
            torch.testing.assert_close(end_acc[n], v, rtol=1e-5, atol=1e-7, msg=n)
        changed += int(not torch.equal(v, start[n]))
    assert changed > 10
    # logged values: the mean over micro-batches, which for these CE means equals the large batch's
    for lo, la in zip(logs_one, logs_acc):
        assert abs(lo["loss_seg"] - la["loss_seg"]) < 1e-5 * max(1.0, abs(lo["loss_seg"]))


def test_without_accumulation_micro_batches_would_differ(toy_root, tmp_path):
    """Control: two separate steps on the halves (k = 1 twice) do not give the large-batch weights,
    so the equality above is not a tolerance artefact."""
    (b,) = _global_batches(1)
    one = SourceOnlyTrainer(_cfg(toy_root, str(tmp_path / "one"), SourceOnlyTrainer, 1), None, CPU)
    two = SourceOnlyTrainer(_cfg(toy_root, str(tmp_path / "two"), SourceOnlyTrainer, 1), None, CPU)
    one.train_step([b])
    for half in _split(b, 2):
        two.train_step([half])
    w1, w2 = one.model.head.convs[0].weight, two.model.head.convs[0].weight
    assert not torch.allclose(w1, w2, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("start", [0, 3])
def test_iteration_i_reads_the_same_samples_for_every_k(start, toy_root, tmp_path):
    loaders = {}
    for k in (1, 2, 4):
        t = AdvWarmupTrainer(_cfg(toy_root, str(tmp_path / f"k{k}"), AdvWarmupTrainer, k), None, CPU)
        loaders[k] = {name: iter(dl) for name, dl in t.build_loaders(start).items()}
    for _ in range(2):  # iterations start, start + 1
        ref = {name: next(it) for name, it in loaders[1].items()}
        for k in (2, 4):
            micro = [{name: next(it) for name, it in loaders[k].items()} for _ in range(k)]
            for name in ref:
                assert all(m[name]["image"].shape[0] == 4 // k for m in micro)
                idx = torch.cat([m[name]["index"] for m in micro])
                assert torch.equal(idx, ref[name]["index"]), (k, name)
                # same augmentation draws (colour jitter on the source): identical pixels
                assert torch.equal(torch.cat([m[name]["image"] for m in micro]), ref[name]["image"])


def test_accum_steps_must_divide_the_batch(toy_root, tmp_path):
    t = SourceOnlyTrainer(_cfg(toy_root, str(tmp_path), SourceOnlyTrainer, 3), None, CPU)
    with pytest.raises(ValueError, match="ACCUM_STEPS 3"):
        t.build_loaders(0)
    with pytest.raises(ValueError, match="micro-batches"):
        t.train_step(_split(_global_batches(1)[0], 2))


def test_training_loop_with_accumulation(toy_root, tmp_path):
    """train() pulls k micro-batches per iteration: 3 iterations with k = 2 end with the weights of
    k = 1 (frozen BN; toy labels have ignored pixels, so per-micro-batch CE means make this close,
    not equal) and the same iteration count."""
    results = {}
    for k in (1, 2):
        out = str(tmp_path / f"k{k}")
        trainer = SourceOnlyTrainer(_cfg(toy_root, out, SourceOnlyTrainer, k, "SOLVER.EVAL_PERIOD", "0"), out, CPU)
        calls = []
        orig = trainer.run_step
        trainer.run_step = lambda b, orig=orig: (calls.append(b["source"]["image"].shape[0]), orig(b))[1]
        result = trainer.train()
        results[k] = (copy.deepcopy(trainer.model_without_ddp.state_dict()), result, calls)
    assert results[1][2] == [4, 4, 4] and results[2][2] == [2] * 6
    assert results[1][1]["iteration"] == results[2][1]["iteration"] == 3
    w1, w2 = results[1][0]["head.convs.0.weight"], results[2][0]["head.convs.0.weight"]
    assert (w1 - w2).abs().max() < 0.05 * (w1 - SourceOnlyTrainer(
        _cfg(toy_root, str(tmp_path / "fresh"), SourceOnlyTrainer, 1), None, CPU).model.head.convs[0].weight).abs().max()
