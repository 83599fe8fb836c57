"""Checkpoints are read without running code from them: a file whose pickle asks for anything beyond
tensors and spcl's allowlist is refused by every reader, in one line that names the file, what it asks
for and the opt-in (SPCL_TRUST_CHECKPOINTS=1); what spcl itself writes, wrote before (numpy RNG state as
an ndarray, under numpy 1 or 2 names), and what the authors and torchvision publish loads, and a resume
from an old checkpoint stays exact."""
from __future__ import annotations

import io
import os
import random
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from torch.serialization import get_unsafe_globals_in_checkpoint

from conftest import load_tool, restored_spcl_logger
from spcl.engine.checkpoint import Checkpointer, unreadable
from spcl.modeling.weights import read_checkpoint
from spcl.utils.env import get_rng_state
from spcl.utils.safe_load import TRUST_ENV, UntrustedCheckpointError, load_checkpoint


class Payload:
    """Unpickling it calls os.makedirs(marker): the stand-in for `os.system("…")` in a shared file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def _stage_file(folder, name="model_0000003", iteration=3):
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()  # momentum buffers: optimiser state as a real stage holds it
    return Checkpointer(str(folder), {"model": model}, {"model": opt}).save(name, iteration)


@pytest.fixture
def payload_file(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    marker = str(tmp_path / "PWNED")
    folder = tmp_path / "checkpoints"
    path = _stage_file(folder)
    data = torch.load(path, weights_only=True)
    data["stage"] = Payload(marker)
    evil = str(folder / "model_0000005.pth")
    torch.save({**data, "iteration": 5}, evil)
    with open(folder / "last_checkpoint", "w") as f:
        f.write("model_0000005.pth")
    return evil, marker


def test_a_payload_is_refused_by_every_reader_and_never_run(payload_file):
    evil, marker = payload_file
    folder = os.path.dirname(evil)
    with restored_spcl_logger():
        test_tool = load_tool("test")
    readers = {
        "read_checkpoint": lambda: read_checkpoint(evil),
        "resume": lambda: Checkpointer(None, {"model": nn.Linear(2, 2)}, {}).resume(evil),
        "stored_config": lambda: Checkpointer.stored_config(evil),
        # the newest file of a stage folder is not skipped for an older one: the user decides
        "find_resume_checkpoint": lambda: Checkpointer(folder, {}, {}).find_resume_checkpoint(),
        "test.py (file)": lambda: test_tool.find_checkpoints(evil),
        "test.py (folder)": lambda: test_tool.find_checkpoints(folder),
    }
    for name, read in readers.items():
        with pytest.raises(UntrustedCheckpointError) as e:
            read()
        message = str(e.value)
        assert "\n" not in message, name
        assert f"refusing to load {evil}: it asks for the global os.makedirs" in message, (name, message)
        assert "would run code from the file" in message and f"set {TRUST_ENV}=1" in message, name
        assert not os.path.exists(marker), f"{name} ran the file's code"


def test_the_opt_in_loads_a_trusted_file_with_full_pickle(payload_file, monkeypatch, spcl_log):
    evil, marker = payload_file
    monkeypatch.setenv(TRUST_ENV, "1")
    assert read_checkpoint(evil)["iteration"] == 5
    assert os.path.isdir(marker)  # full pickle: the file's code ran, as the user chose
    assert f"loading {evil} with full pickle" in spcl_log.text and "os.makedirs" in spcl_log.text
    monkeypatch.setenv(TRUST_ENV, "yes")  # only "1" opts in
    with pytest.raises(UntrustedCheckpointError):
        read_checkpoint(evil)


def test_new_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    """The numpy RNG key is stored as a list: no global beyond PyTorch's own in the file, so even a plain
    `torch.load` (weights_only by default) reads it."""
    path = _stage_file(tmp_path)
    assert get_unsafe_globals_in_checkpoint(path) == []
    key = torch.load(path, weights_only=True)["rng"]["numpy"][1]
    assert isinstance(key, list) and len(key) == 624


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


@pytest.mark.parametrize("form", ["new", "old ndarray key", "old, numpy 1 names"])
def test_resume_restores_every_rng_exactly(tmp_path, form):
    """A resume continues the python, numpy and torch random streams where the checkpoint left them, from
    this version's files and from those written before it (the numpy key an ndarray; numpy 1 pickled its
    array reconstruction as numpy.core.multiarray._reconstruct, numpy 2 as numpy._core.…)."""
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model = nn.Linear(2, 2)
    ckpt = Checkpointer(str(tmp_path), {"model": model}, {})
    data = ckpt.state(7)
    if form != "new":
        data["rng"] = get_rng_state()  # what checkpoints held before: numpy's tuple with an ndarray key
        assert get_unsafe_globals_in_checkpoint(_saved(data, tmp_path / "probe.pth")) != []
    path = _saved(data, tmp_path / "model_0000007.pth", numpy1=form == "old, numpy 1 names")
    expected = _draws()
    _draws(), _draws()  # the streams move on
    assert ckpt.resume(path) == 7
    assert _draws() == expected



def test_resume_restores_the_fp16_gradient_scalers_scale_and_growth_count(tmp_path):
    """With SOLVER.AMP fp16 the loss scale is training state: a resume that started again from the initial
    scale (2^16) would overflow and skip steps the uninterrupted run takes. An overflowing step halves the
    scale, a finite one counts towards growth; both must come back from the checkpoint."""
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=3)
    for factor in (float("inf"), 1.0):  # one overflow (scale backs off), one finite step (growth count 1)
        opt.zero_grad()
        scaler.scale(model(torch.ones(1, 2)).sum() * factor).backward()
        scaler.step(opt)
        scaler.update()
    saved = scaler.state_dict()
    assert saved["scale"] == 2.0 ** 15 and saved["_growth_tracker"] == 1  # the test's premise
    path = Checkpointer(str(tmp_path), {"model": model}, {"opt": opt}, scaler=scaler).save("model_0000002", 2)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=3)
    Checkpointer(str(tmp_path), {"model": model}, {"opt": opt}, scaler=fresh).resume(path)
    assert fresh.get_scale() == 2.0 ** 15 and fresh.state_dict()["_growth_tracker"] == 1



def test_the_last_checkpoint_named_in_messages_is_one_that_exists(tmp_path):
    """`last_checkpoint` (named by the Ctrl-C, out-of-memory and divergence messages as what a rerun resumes
    from) follows the pointer while its file is there, and is None once that file is gone (deleted by hand,
    or a copy of the folder without it), never a path to nothing."""
    ckpt = Checkpointer(str(tmp_path), {"model": nn.Linear(2, 2)}, {})
    assert ckpt.last_checkpoint() is None
    first = ckpt.save("model_0000001", 1)
    second = ckpt.save("model_0000002", 2)
    assert ckpt.last_checkpoint() == second
    ckpt.save("model_best", 2, periodic=False, pointer=False)
    assert ckpt.last_checkpoint() == second  # a save without the pointer leaves it
    os.remove(second)
    assert os.path.isfile(first) and ckpt.last_checkpoint() is None



def test_each_periodic_save_keeps_the_newest_periodic_checkpoints_only(tmp_path):
    """SOLVER.KEEP_CHECKPOINTS bounds the disk a stage takes while it runs, not only at its end: after every
    periodic save the folder holds the `keep` newest periodic checkpoints; a save that is not periodic (the
    best model, a hand-off) deletes none of them and is never deleted."""
    ckpt = Checkpointer(str(tmp_path), {"model": nn.Linear(2, 2)}, {}, keep=2)
    ckpt.save("model_best", 0, periodic=False, pointer=False)
    for it in range(1, 5):
        ckpt.save(f"model_{it:07d}", it)
        expected = [f"model_{i:07d}.pth" for i in range(max(1, it - 1), it + 1)]
        assert sorted(f for f in os.listdir(tmp_path) if f[6:13].isdigit()) == expected
    ckpt.save("model_final", 4, periodic=False)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == [
        "model_0000003.pth", "model_0000004.pth", "model_best.pth", "model_final.pth"]


def _saved(data, path, numpy1=False):
    """`data` saved to `path`; `numpy1`: in the legacy format with numpy 1's module name for arrays."""
    if not numpy1:
        torch.save(data, path)
        return str(path)
    buf = io.BytesIO()
    torch.save(data, buf, _use_new_zipfile_serialization=False)  # protocol 2: globals as text
    raw = buf.getvalue()
    assert raw.count(b"numpy._core.multiarray\n_reconstruct") == 1
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct"))
    return str(path)


def test_published_weights_load_safely(tmp_path):
    """A torchvision ImageNet state dict and a released SPCL/FADA checkpoint (as the authors' code saves
    it: state dicts, optimiser states, an iteration) need nothing beyond PyTorch's own safe types."""
    tv = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tv)
    net = nn.Conv2d(3, 4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3, 5, 5)).sum().backward()
    opt.step()
    released = str(tmp_path / "model_iter020000.pth")
    torch.save({"iteration": 20000, "feature_extractor": {"module.backbone.conv1.weight": net.weight},
                "classifier": {"module.conv2d_list.0.weight": net.weight}, "optimizer_fea": opt.state_dict(),
                "optimizer_cls": opt.state_dict()}, released)
    for path in (tv, released):
        assert get_unsafe_globals_in_checkpoint(path) == []
        assert isinstance(load_checkpoint(path), dict)


def test_a_long_reason_is_cut_at_a_sentence_and_the_way_out_names_the_stage_folder(tmp_path):
    """torch's message for a truncated file is one long line; cut at 200 characters it ended "your checkpoint
    file is". The reason keeps whole sentences, and the error names the folder to delete."""
    from spcl.engine.checkpoint import Checkpointer, short_reason

    assert short_reason("A b. C d. " + "e" * 300) == "A b. C d."
    assert short_reason("a" * 150 + ". " + "b" * 70 + ". " + "c" * 100) == "a" * 150 + "."  # 2nd ends past 200
    assert short_reason("x" * 300, limit=10) == "x" * 10 + "…"
    assert short_reason("x" * 200) == "x" * 200  # a line of exactly `limit` characters is whole: nothing cut
    assert short_reason("first line. more\nsecond") == "first line. more"
    folder = tmp_path / "3_align" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"a": torch.zeros(300, 300), "iteration": 2}, str(folder / "model_0000002.pth"))
    data = (folder / "model_0000002.pth").read_bytes()
    (folder / "model_0000002.pth").write_bytes(data[:len(data) // 2])
    reason = unreadable(str(folder / "model_0000002.pth"))
    assert reason.startswith("RuntimeError: PytorchStreamReader failed reading zip archive") and reason.endswith(".")
    with pytest.raises(IOError, match=rf"Delete the stage's folder {re.escape(str(tmp_path / '3_align'))} to run "
                                      "the stage afresh$"):
        Checkpointer(str(folder), {}, {}).find_resume_checkpoint()


def test_unreadable_files_are_still_reported_as_unreadable(tmp_path):
    """Bytes that are no pickle are a damaged file (skipped when resuming), not an untrusted one."""
    junk = tmp_path / "model_0000009.pth"
    junk.write_bytes(b"not a checkpoint")
    assert "Weights only" not in unreadable(str(junk)) and "\n" not in unreadable(str(junk))
    with pytest.raises(OSError, match=r"cannot read weights file .*model_0000009\.pth"):
        read_checkpoint(str(junk))


def test_a_torch_without_the_restricted_loaders_allowlist_is_named_at_import():
    """Before torch 2.6 every checkpoint would read as "unreadable" (and a resume would say to delete the stage
    folder): the import stops instead, naming the version needed. (In a subprocess: a reload here would leave
    two classes of UntrustedCheckpointError in this one.)"""
    import subprocess
    import sys

    code = "import torch; del torch.serialization.safe_globals; import spcl.utils.safe_load"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode != 0
    assert "ImportError: spcl reads checkpoints with torch.load's restricted loader, which needs torch >= 2.6" \
        in proc.stderr, proc.stderr


@pytest.mark.parametrize("content, says", [
    (b"hello world\n", "not a PyTorch checkpoint file (neither a zip archive nor a pickle: it starts with b'hello wo')"),
    (b'{"a": 1}', "not a PyTorch checkpoint file (neither a zip archive nor a pickle: it starts with b'{\"a\": 1}')"),
    (b"", "an empty file")])
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content, says):
    """A text, JSON or empty file given as a checkpoint: torch's restricted loader says `101` or `Unsupported
    operand 123`; the reason given is what the file is."""
    import pickle

    from spcl.utils.safe_load import load_checkpoint

    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(pickle.UnpicklingError) as e:
        load_checkpoint(str(path))
    assert str(e.value) == says


def test_a_legacy_non_zip_checkpoint_loads_whole_even_when_mapping_is_asked(tmp_path):
    """torch.save(_use_new_zipfile_serialization=False) writes a bare pickle (it starts with b"\\x80"), which
    torch.load cannot map: `mmap=True` reads it whole instead."""
    path = tmp_path / "old.pth"
    weight = torch.arange(6.0).view(2, 3)
    torch.save({"w": weight, "iteration": 4}, str(path), _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    for mmap in (False, True):
        data = load_checkpoint(str(path), mmap=mmap)
        assert data["iteration"] == 4 and torch.equal(data["w"], weight)


def test_loading_a_trusted_file_with_full_pickle_is_a_warning(payload_file, monkeypatch):
    import logging

    evil, _ = payload_file
    monkeypatch.setenv(TRUST_ENV, "1")
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("spcl")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        load_checkpoint(evil)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert records[0].getMessage().startswith(f"loading {evil} with full pickle, which runs code from the file")
