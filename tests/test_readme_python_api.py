"""The README's "Python API" block and its "From Python" example of using a trained model, run as written
(in a folder laid out like the repository, on a tiny generated dataset and an untrained model), and what
their comments promise checked on the values they leave.

The block names four tensors it does not build (`pred`, `label`, `feat`, `mask`): they are filled in here,
`pred` equal to `label` so the evaluator's answer is known (a perfect prediction: 100 mIoU)."""
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_block(after: str) -> str:
    """The first ```python block of the README after the line `after`."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split(after, 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.fixture
def repo_like(tmp_path, toy_root, monkeypatch):
    """A working folder with configs/, datasets/toy (the tiny toy) and the checkpoint and prototype files the
    block reads, written from an untrained toy model."""
    from spcl.config import load_config
    from spcl.modeling import build_segmentor

    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    (tmp_path / "datasets").mkdir()
    os.symlink(toy_root, tmp_path / "datasets" / "toy")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/toy.yaml")
    torch.manual_seed(0)
    model = build_segmentor(cfg, load_weights=False)
    state = {"model": model.state_dict(), "iteration": 0}
    final = tmp_path / "output" / "toy" / "5_self_train" / "checkpoints" / "model_final.pth"
    final.parent.mkdir(parents=True)
    torch.save(state, final)
    torch.save(state, tmp_path / "model_final.pth")
    protos = tmp_path / "output" / "toy" / "1_prototypes" / "prototypes.pth"
    protos.parent.mkdir(parents=True)
    unit = torch.nn.functional.normalize(torch.randn(19, model.backbone.out_channels), dim=1)
    torch.save({"prototypes": unit}, protos)
    return tmp_path


def test_readme_python_api_runs_and_does_what_its_comments_say(repo_like):
    from spcl.engine.stages import AlignTrainer
    from spcl.losses.contrastive import contrastive_loss_reference

    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 19, (2, 16, 32), generator=g)
    label[:, :2] = 255
    feat = torch.randn(2, 2048, 8, 16, generator=g)
    mask = torch.randint(0, 19, (2, 8, 16), generator=g)
    mask[0, 0] = 255
    ns = {"pred": label.clone(), "label": label, "feat": feat, "mask": mask}
    exec(compile(_python_block("## Python API"), "README.md (Python API)", "exec"), ns)

    item, probs = ns["item"], ns["probs"]
    assert item["image"].dtype == torch.float32 and item["image"].shape[0] == 3
    assert item["label"].dtype == torch.int64 and item["label"].dim() == 2  # test mode: at its file's size
    values = set(item["label"].unique().tolist())
    assert values <= set(range(19)) | {255} and isinstance(item["name"], str)
    assert probs.shape == (1, 19, *item["image"].shape[1:])  # full input resolution
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *item["image"].shape[1:]))
    assert 0.0 <= ns["metrics"]["mIoU"] <= 100.0
    assert ns["ev"].evaluate()["mIoU"] == pytest.approx(100.0)  # pred == label
    assert ns["bank"].prototypes.shape == (19, 2048)
    reference = contrastive_loss_reference(feat, mask, ns["bank"].prototypes, temperature=100.0)
    torch.testing.assert_close(ns["loss"], reference)  # "the fast path, same value"
    thresholds = ns["th"].compute()
    assert thresholds.shape == (19,) and bool(((thresholds >= 0) & (thresholds <= 0.9)).all())
    assert isinstance(ns["trainer"], AlignTrainer)
    assert not os.path.exists(os.path.join(repo_like, "output", "toy", "3_align"))  # "writes nothing"


def test_readme_from_python_labels_an_image_at_its_own_size(repo_like):
    """"Using a trained model", "From Python": with the toy config instead of gta5_r101.yaml (same code path,
    a model small enough for a test), on a street.jpg of an odd size."""
    import numpy as np
    from PIL import Image

    from spcl.data.labels import trainid_to_labelid_lut

    block = _python_block("**From Python**")
    assert 'load_config("configs/gta5_r101.yaml")' in block
    rgb = np.random.default_rng(0).integers(0, 256, (71, 103, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(repo_like / "street.jpg")
    ns = {}
    exec(compile(block.replace("configs/gta5_r101.yaml", "configs/toy.yaml"), "README.md (From Python)", "exec"), ns)
    labels = ns["labels"]
    assert labels.shape == (71, 103) and labels.dtype == np.uint8 and labels.max() < 19
    lut = trainid_to_labelid_lut(19)
    np.testing.assert_array_equal(ns["ids"], lut[labels])
    assert set(np.unique(ns["ids"])) <= set(lut[:19].tolist())
    assert ns["colours"].shape == (71, 103, 3)
