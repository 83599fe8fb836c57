"""PrototypeBank EMA (paper Eq. 3; docs/method.md "Prototypes") with present/absent classes under both policies, and the
source-set initialisation (pixel_mean vs image_mean)."""
import os

import pytest
import torch

from spcl.prototypes import PrototypeBank, class_feature_sums, compute_source_prototypes, source_mask


def _batch():
    # 1x2x1x3: class 0 at (2,0) and (0,3) -> normalised (1,0), (0,1); third pixel ignored
    feat = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 3.0, 5.0]]]])
    mask = torch.tensor([[[0, 0, 255]]])
    return feat, mask


INIT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_ema_keep_hand_computed():
    bank = PrototypeBank(3, 2, alpha=0.1, absent="keep")
    bank.set(INIT)
    counts = bank.update(*_batch())
    assert counts.tolist() == [2.0, 0.0, 0.0]
    expected = torch.tensor([[0.1 * 1 + 0.9 * 0.5, 0.9 * 0.5], [0.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(bank.prototypes, expected, atol=1e-6)


def test_ema_decay_reproduces_released_code():
    bank = PrototypeBank(3, 2, alpha=0.1, absent="decay")
    bank.set(INIT)
    bank.update(*_batch())
    expected = torch.tensor([[0.55, 0.45], [0.0, 0.1], [0.1, 0.1]])
    assert torch.allclose(bank.prototypes, expected, atol=1e-6)


def test_alpha_one_means_fixed_prototypes_and_alpha_zero_means_batch_mean():
    fixed = PrototypeBank(3, 2, alpha=1.0)
    fixed.set(INIT)
    fixed.update(*_batch())
    assert torch.equal(fixed.prototypes, INIT)
    follow = PrototypeBank(3, 2, alpha=0.0)
    follow.set(INIT)
    follow.update(*_batch())
    assert torch.allclose(follow.prototypes[0], torch.tensor([0.5, 0.5]))


def test_class_sums_match_loop_reference():
    torch.manual_seed(0)
    feat = torch.randn(2, 5, 4, 3)
    mask = torch.randint(0, 4, (2, 4, 3))
    mask[1, 0] = 255
    sums, counts = class_feature_sums(feat, mask, 4)
    ref_s, ref_c = torch.zeros(4, 5), torch.zeros(4)
    for b in range(2):
        for y in range(4):
            for x in range(3):
                k = int(mask[b, y, x])
                if k != 255:
                    q = feat[b, :, y, x]
                    ref_s[k] += q / q.norm()
                    ref_c[k] += 1
    assert torch.allclose(sums, ref_s, atol=1e-5)
    assert torch.equal(counts, ref_c)


def test_bank_is_saved_in_state_dict_and_restored():
    bank = PrototypeBank(3, 2)
    bank.set(INIT)
    other = PrototypeBank(3, 2)
    other.load_state_dict(bank.state_dict())
    assert "prototypes" in bank.state_dict()
    assert torch.equal(other.prototypes, INIT)
    with pytest.raises(ValueError, match="holds"):
        bank.set(torch.zeros(2, 2))


class _FixedModel(torch.nn.Module):
    """Returns the image itself as features (C = 3) and fixed logits predicting class 0."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
        logits[:, 0] = 1.0
        return {"feat": x, "logits": logits}


def test_initialisation_pixel_mean_vs_image_mean():
    # image A: 3 pixels of class 0 along e0; image B: 1 pixel of class 0 along e1 (+1 pixel class 1)
    a = torch.zeros(1, 3, 1, 3)
    a[0, 0] = 1.0
    b = torch.zeros(1, 3, 1, 3)
    b[0, 1, 0, 0] = 2.0
    b[0, 2, 0, 1:] = 1.0
    la, lb = torch.tensor([[[0, 0, 0]]]), torch.tensor([[[0, 1, 255]]])
    loader = [{"image": a, "label": la}, {"image": b, "label": lb}]
    pix = compute_source_prototypes(_FixedModel(), loader, 2, torch.device("cpu"), "pixel_mean")
    img = compute_source_prototypes(_FixedModel(), loader, 2, torch.device("cpu"), "image_mean")
    assert torch.allclose(pix["prototypes"][0], torch.tensor([0.75, 0.25, 0.0]))  # (3 e0 + e1) / 4
    assert torch.allclose(img["prototypes"][0], torch.tensor([0.5, 0.5, 0.0]))  # (e0 + e1) / 2
    assert torch.allclose(pix["prototypes"][1], torch.tensor([0.0, 0.0, 1.0]))
    assert pix["counts"].tolist() == [4.0, 1.0] and img["counts"].tolist() == [2.0, 1.0]


def test_source_mask_gt_and_pred_ignores_wrong_predictions():
    label = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = 1.0  # predicts class 0 everywhere
    assert source_mask(label, logits, "gt").tolist() == label.tolist()
    assert source_mask(label, logits, "gt_and_pred").tolist() == [[[0, 255], [255, 0]]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_class_sums_equal_the_plain_one_hot_product(dtype):
    """class_feature_sums (no copies of the map) = one_hot(mask)ᵀ · normalize(feat), in `dtype`."""
    from spcl.prototypes import class_means, normalize_pixels

    g = torch.Generator().manual_seed(5)
    feat = torch.randn(2, 40, 4, 5, generator=g)
    mask = torch.randint(0, 4, (2, 4, 5), generator=g)
    mask[1, 2] = 255
    sums, counts = class_feature_sums(feat, mask, 5, dtype=dtype)
    assert sums.dtype == dtype and counts.dtype == dtype
    q = normalize_pixels(feat).permute(0, 2, 3, 1).reshape(-1, 40).double()  # N×C
    y = mask.reshape(-1)
    onehot = torch.nn.functional.one_hot(torch.where(y == 255, 4, y), 5).double()
    onehot[y == 255] = 0
    assert torch.allclose(sums.double(), onehot.t() @ q, atol=1e-5)
    assert counts.tolist() == onehot.sum(0).tolist()
    means = class_means(sums, counts)
    assert torch.equal(means[4], torch.zeros(40, dtype=dtype))  # class 4 never seen: zero row


def test_prototype_file_forms_and_mistakes_name_the_file(tmp_path):
    """What the `prototypes` stage writes (a dict) and a bare K×C tensor both load; a file of another shape,
    of something else, or not a torch file at all stops naming it (align checks the shape before training)."""
    from spcl.prototypes import load_prototype_file

    p = torch.randn(19, 8)
    torch.save({"prototypes": p, "counts": torch.ones(19)}, tmp_path / "stage.pth")
    torch.save(p, tmp_path / "bare.pth")
    for name in ("stage.pth", "bare.pth"):
        assert torch.equal(load_prototype_file(str(tmp_path / name), (19, 8)), p)
    with pytest.raises(ValueError, match=r"bare\.pth holds \(19, 8\) prototypes; this model needs \(19, 512\)"):
        load_prototype_file(str(tmp_path / "bare.pth"), (19, 512))
    torch.save({"foo": 1}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth holds a dict with keys \['foo'\]; expected a K×C tensor"):
        load_prototype_file(str(tmp_path / "other.pth"))
    torch.save(torch.randn(19), tmp_path / "flat.pth")
    with pytest.raises(ValueError, match=r"flat\.pth holds Tensor"):
        load_prototype_file(str(tmp_path / "flat.pth"))
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(OSError, match=r"cannot read prototype file .*junk\.pth"):
        load_prototype_file(str(tmp_path / "junk.pth"))
    # a model checkpoint (it pickles Python objects: the numpy random state) is named as such, in one line
    import numpy as np

    torch.save({"model": {"head.w": torch.zeros(1)}, "rng": np.random.get_state()}, tmp_path / "model_final.pth")
    with pytest.raises(OSError) as info:
        load_prototype_file(str(tmp_path / "model_final.pth"))
    assert "\n" not in str(info.value) and "model_final.pth: it holds Python objects besides tensors, as a model " \
                                           "checkpoint does; PROTOTYPE.PATH takes the prototypes.pth" in str(info.value)
    # a checkpoint of the current format holds no Python objects (its numpy random state is a list): it loads
    # as tensors and is named a model checkpoint all the same
    torch.save({"model": {"head.w": torch.zeros(1)}, "iteration": 3}, tmp_path / "new_final.pth")
    with pytest.raises(ValueError, match=r"new_final\.pth holds a model checkpoint, not prototypes; expected a K×C"):
        load_prototype_file(str(tmp_path / "new_final.pth"))
    # non-finite values are refused here, naming the file and the classes, not later as a diverged loss
    for bad in (float("nan"), float("inf"), float("-inf")):
        q = p.clone()
        q[3, 5] = bad
        q[11, 0] = bad
        torch.save({"prototypes": q}, tmp_path / "nan.pth")
        with pytest.raises(ValueError, match=r"nan\.pth holds NaN or Inf in the rows of class\(es\) \[3, 11\]:"):
            load_prototype_file(str(tmp_path / "nan.pth"), (19, 8))


@pytest.mark.parametrize("init", ["pixel_mean", "image_mean"])
def test_a_pass_resumed_from_its_running_sums_ends_as_an_uninterrupted_one(init):
    """The sums `save` received after 3 of 5 batches, and a loader starting after those images: the same
    prototypes and counts, bit for bit."""
    g = torch.Generator().manual_seed(0)
    loader = [{"image": torch.randn(2, 3, 4, 5, generator=g), "label": torch.randint(0, 3, (2, 4, 5), generator=g)}
              for _ in range(5)]
    saved = []
    full = compute_source_prototypes(_FixedModel3(), loader, 3, torch.device("cpu"), init,
                                     save=lambda s: saved.append({k: v.clone() if torch.is_tensor(v) else v
                                                                  for k, v in s.items()}))
    assert [s["images"] for s in saved] == [2, 4, 6, 8, 10]
    resumed = compute_source_prototypes(_FixedModel3(), loader[3:], 3, torch.device("cpu"), init, state=saved[2])
    assert torch.equal(resumed["prototypes"], full["prototypes"]) and torch.equal(resumed["counts"], full["counts"])
    fresh = compute_source_prototypes(_FixedModel3(), loader[3:], 3, torch.device("cpu"), init)
    assert not torch.equal(fresh["counts"], full["counts"])  # the state is what carries the first batches


class _FixedModel3(torch.nn.Module):
    """The image as features, logits of 3 classes from its channels."""

    def forward(self, x):
        return {"feat": x, "logits": x}


def test_partial_state_is_read_back_only_with_its_key(tmp_path):
    from spcl.engine.stages.offline import PartialState

    path = str(tmp_path / ".partial" / "rank0.pth")
    state = {"total": torch.arange(6.0).view(2, 3), "counts": torch.tensor([1.0, 2.0]), "images": 4}
    PartialState(path, {"config": "a", "weights": ("w", 1)}, period_s=0).maybe_save(state)
    back = PartialState(path, {"config": "a", "weights": ["w", 1]}).load()  # a tuple reads back as a list
    assert back["images"] == 4 and torch.equal(back["total"], state["total"])
    assert PartialState(path, {"config": "b", "weights": ["w", 1]}).load() is None
    PartialState(str(tmp_path / "other.pth"), {}, period_s=3600).maybe_save(state)  # too soon after the start
    assert not os.path.exists(tmp_path / "other.pth")
    with open(path, "r+b") as f:
        f.truncate(50)  # cut short
    assert PartialState(path, {"config": "a", "weights": ["w", 1]}).load() is None
    PartialState(path, {}).remove()
    assert not os.path.exists(tmp_path / ".partial")


def test_partial_state_is_saved_once_per_period_and_read_back_only_from_a_checkpoint_dict(tmp_path, monkeypatch):
    """PartialState writes when `period_s` seconds have passed since it was made or last wrote (not before, and
    not at every call after); `load()` first removes what a write cut short left in its folder, and reads a
    file holding anything but a saved state (another version's file) as none."""
    import types

    import spcl.engine.stages.offline as offline
    from spcl.engine.stages.offline import PartialState

    now = [100.0]
    monkeypatch.setattr(offline, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    path = tmp_path / ".partial" / "rank0.pth"
    partial = PartialState(str(path), {"config": "a"}, period_s=10)
    saved = []
    for t, images in ((105.0, 1), (110.0, 2), (115.0, 3), (119.5, 4), (120.0, 5), (121.0, 6)):
        now[0] = t
        partial.maybe_save({"images": images, "total": torch.full((2,), float(images))})
        back = PartialState(str(path), {"config": "a"}).load()
        saved.append(None if back is None else back["images"])
    assert saved == [None, 2, 2, 2, 5, 5]
    assert torch.equal(back["total"], torch.full((2,), 5.0))
    (path.parent / ".tmp_cut_short.pth").write_bytes(b"x")
    assert PartialState(str(path), {"config": "a"}).load()["images"] == 5
    assert os.listdir(path.parent) == ["rank0.pth"]
    torch.save([1, 2], str(path))
    assert PartialState(str(path), {"config": "a"}).load() is None


def test_source_prototypes_are_those_of_the_model_in_eval_mode():
    """docs/method.md "Prototypes" (Eq. 2): the initialisation runs the model in eval mode. A model handed over
    in training mode (BatchNorm on batch statistics) gives the prototypes of its eval-mode copy, and its
    running statistics are left as they were."""
    import copy

    class _BNModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(0.5)
            self.bn.running_var.fill_(4.0)

        def forward(self, x):
            f = self.bn(x)
            return {"feat": f, "logits": f}

    g = torch.Generator().manual_seed(3)
    loader = [{"image": torch.randn(2, 3, 4, 5, generator=g), "label": torch.randint(0, 3, (2, 4, 5), generator=g)}
              for _ in range(2)]
    model = _BNModel().train()
    reference = copy.deepcopy(model).eval()
    got = compute_source_prototypes(model, loader, 3, torch.device("cpu"))
    expected = compute_source_prototypes(reference, loader, 3, torch.device("cpu"))
    assert torch.equal(got["prototypes"], expected["prototypes"]) and torch.equal(got["counts"], expected["counts"])
    assert model.bn.running_mean.eq(0.5).all() and model.bn.running_var.eq(4.0).all()
