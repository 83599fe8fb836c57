"""Faults injected through the public API and CLI: a kill followed by a torn newest checkpoint, a
changed key on resume or on a finished run, a diverging lr, a full disk, and the permissions of
what a run writes."""
import errno
import io
import json
import os
import stat

import pytest
import torch

from conftest import tiny_cfg
from spcl.config import ConfigDriftError
from spcl.engine import run_pipeline, run_stage
from spcl.engine.stages import SourceOnlyTrainer
from spcl.engine.trainer import DivergenceError

# On the CPU also where a GPU is present: resumed runs must equal uninterrupted ones bit for bit,
# which only the CPU guarantees (conftest.hide_gpu).
pytestmark = pytest.mark.usefixtures("on_the_cpu")

OPTS = ("SOURCE_ONLY.STOP_ITER", "5", "SOURCE_ONLY.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.KEEP_CHECKPOINTS", "3", "PIPELINE.STAGES", "['source_only']")


class Killed(RuntimeError):
    pass


def _final(folder):
    return torch.load(os.path.join(folder, "checkpoints", "model_final.pth"), map_location="cpu",
                      weights_only=False)["model"]


def _kill_at(monkeypatch, iteration):
    original = SourceOnlyTrainer.run_step

    def run_step(self, batch):
        if self.iteration == iteration:
            raise Killed()
        return original(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", run_step)
    return original


def _killed_run(toy_root, out, monkeypatch, iteration, *opts):
    """Run source_only into `out` until it is killed at `iteration`, then restore the real step."""
    original = _kill_at(monkeypatch, iteration)
    with pytest.raises(Killed):
        run_stage(tiny_cfg(toy_root, out, *OPTS, *opts), "source_only", out)
    monkeypatch.setattr(SourceOnlyTrainer, "run_step", original)


def test_torn_newest_checkpoint_falls_back_to_an_older_one(toy_root, tmp_path, monkeypatch):
    ref = str(tmp_path / "ref")
    run_stage(tiny_cfg(toy_root, ref, *OPTS), "source_only", ref)
    out = str(tmp_path / "run")
    cfg = tiny_cfg(toy_root, out, *OPTS)
    original = _kill_at(monkeypatch, 4)  # after the checkpoints of iterations 2 and 4
    with pytest.raises(Killed):
        run_stage(cfg, "source_only", out)
    newest = os.path.join(out, "checkpoints", "model_0000004.pth")
    with open(newest, "r+b") as f:  # torn: half of the file
        f.truncate(os.path.getsize(newest) // 2)
    monkeypatch.setattr(SourceOnlyTrainer, "run_step", original)
    run_stage(cfg, "source_only", out)
    log = open(os.path.join(out, "log.txt")).read()
    assert "resuming from" in log and "model_0000004.pth is unreadable" in log
    assert os.path.join("checkpoints", "model_0000002.pth instead") in log
    a, b = _final(ref), _final(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed at 2: the same weights as uninterrupted


def test_every_checkpoint_unreadable_names_them(toy_root, tmp_path):
    out = str(tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "model_0000002.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(IOError, match="model_0000002.pth"):
        SourceOnlyTrainer(tiny_cfg(toy_root, out, *OPTS), out, torch.device("cpu"))


def test_resume_from_another_stages_checkpoint_names_what_is_missing_or_mismatched(tmp_path):
    """A checkpoint copied into the wrong stage folder: a state the stage needs is absent, or a module's
    tensors do not fit; both stop with the file and the module named (user errors: one line from the tools)."""
    import torch.nn as nn

    from spcl.engine.checkpoint import Checkpointer

    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = Checkpointer(str(tmp_path), {"model": model}, {"model": opt}).save("model_0000003", 3)
    with_d = Checkpointer(None, {"model": nn.Linear(2, 2), "discriminator": nn.Linear(2, 1)}, {})
    with pytest.raises(KeyError, match="has no 'discriminator' state; it was written by another stage"):
        with_d.resume(path)
    wider = Checkpointer(None, {"model": nn.Linear(3, 2)}, {})
    with pytest.raises(ValueError, match=r"model_0000003\.pth does not match this stage's 'model'"):
        wider.resume(path)
    same = nn.Linear(2, 2)
    assert Checkpointer(None, {"model": same}, {"model": torch.optim.SGD(same.parameters(), lr=0.1)}).resume(
        path) == 3
    assert torch.equal(same.weight, model.weight)
    torch.save({"model": model.state_dict(), "iteration": 5}, tmp_path / "model_only.pth")  # e.g. converted
    fresh = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="model_only.pth has no optimiser state for 'model'"):
        Checkpointer(None, {"model": fresh}, {"model": torch.optim.SGD(fresh.parameters(), lr=0.1)}).resume(
            str(tmp_path / "model_only.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(OSError, match="cannot read checkpoint .*junk.pth"):
        Checkpointer(None, {"model": nn.Linear(2, 2)}, {}).resume(str(tmp_path / "junk.pth"))


def test_changed_key_on_resume_stops_and_names_it(toy_root, tmp_path, monkeypatch):
    out = str(tmp_path)
    _killed_run(toy_root, out, monkeypatch, 3)
    changed = tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.BASE_LR", "0.123")
    with pytest.raises(ConfigDriftError, match=r"SOURCE_ONLY\.BASE_LR"):
        run_stage(changed, "source_only", out)
    assert not os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))
    # keys that cannot change a result may change
    run_stage(tiny_cfg(toy_root, out, *OPTS, "SOLVER.LOG_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0"),
              "source_only", out)
    assert os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))


def test_out_of_gpu_memory_names_the_iteration_the_checkpoint_and_what_to_change(toy_root, tmp_path, monkeypatch):
    """CUDA OOM inside a stage (faked on the CPU): one user error that says where it stopped, from which
    checkpoint a rerun resumes, and which keys lower the memory; then a rerun with a smaller batch resumes."""
    from conftest import load_tool
    from spcl.engine.trainer import OutOfMemory

    out = str(tmp_path)
    original = SourceOnlyTrainer.run_step

    def run_step(self, batch):
        if self.iteration == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                              "capacity of 79.19 GiB\nof which 1.2 GiB is free.")
        return original(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", run_step)
    with pytest.raises(OutOfMemory) as err:
        run_stage(tiny_cfg(toy_root, out, *OPTS), "source_only", out)
    msg = str(err.value)
    # in the 4th iteration (self.iteration counts from 0, the log and the messages from 1)
    assert msg.startswith("out of GPU memory in iteration 4 of stage source_only (last checkpoint: ")
    assert "model_0000002.pth" in msg and "Tried to allocate 2.00 GiB" in msg and "of which" not in msg
    assert all(k in msg for k in ("SOURCE_ONLY.*_BATCH", "SOLVER.ACCUM_STEPS", "SOLVER.AMP bf16",
                                  "--allow-config-change"))
    assert OutOfMemory in load_tool("_common").user_errors()  # printed as one line by the tools
    monkeypatch.setattr(SourceOnlyTrainer, "run_step", original)
    # outside the training loop (here the stage's closing evaluation): the stage is named, with the
    # inference keys to change
    real_eval = SourceOnlyTrainer.evaluate_and_log

    def evaluate_oom(self, iteration):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB.")

    monkeypatch.setattr(SourceOnlyTrainer, "evaluate_and_log", evaluate_oom)
    cfg = tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.SOURCE_BATCH", "1", "PIPELINE.ALLOW_CONFIG_CHANGE", "True")
    with pytest.raises(OutOfMemory, match=r"out of GPU memory in stage source_only \(.*\): CUDA out of memory\. "
                                          r"Tried to allocate 1\.50 GiB\. Lower TEST\.BATCH_SIZE"):
        run_stage(cfg, "source_only", out)
    monkeypatch.setattr(SourceOnlyTrainer, "evaluate_and_log", real_eval)
    run_stage(cfg, "source_only", out)
    assert os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))


def test_out_of_gpu_memory_in_a_periodic_evaluation_points_to_the_test_batch(toy_root, tmp_path, monkeypatch):
    """The evaluation's batch is TEST.BATCH_SIZE: lowering the training batch would not help there."""
    from spcl.engine.trainer import OutOfMemory

    def evaluate_oom(self, iteration):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB.")

    monkeypatch.setattr(SourceOnlyTrainer, "evaluate_and_log", evaluate_oom)
    with pytest.raises(OutOfMemory) as err:
        run_stage(tiny_cfg(toy_root, str(tmp_path), *OPTS, "SOLVER.EVAL_PERIOD", "2"), "source_only", str(tmp_path))
    msg = str(err.value)
    assert msg.startswith("out of GPU memory in the evaluation after iteration 2 of stage source_only")
    assert "Lower TEST.BATCH_SIZE" in msg and "_BATCH, or more processes" not in msg
    # after an evaluation that went through, an OOM in training is the training batch's again
    monkeypatch.undo()
    real = SourceOnlyTrainer.run_step

    def step_oom(self, batch):
        if self.iteration == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return real(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", step_oom)
    with pytest.raises(OutOfMemory, match=r"^out of GPU memory in iteration 4 of stage source_only .*_BATCH, or more"):
        run_stage(tiny_cfg(toy_root, str(tmp_path / "b"), *OPTS, "SOLVER.EVAL_PERIOD", "2"), "source_only",
                  str(tmp_path / "b"))


def test_changed_key_with_explicit_permission_resumes(toy_root, tmp_path, monkeypatch):
    out = str(tmp_path)
    _killed_run(toy_root, out, monkeypatch, 3)
    run_stage(tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.BASE_LR", "0.02", "PIPELINE.ALLOW_CONFIG_CHANGE", "True"),
              "source_only", out)
    assert os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))
    configs = sorted(f for f in os.listdir(out) if f.startswith("config"))
    assert configs[0] == "config.yaml" and len(configs) == 2  # the original record stays, the new one beside it


def test_rerun_of_a_finished_run_with_another_key_refuses_and_keeps_the_record(toy_root, tmp_path):
    out = str(tmp_path)
    run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    record = open(os.path.join(out, "config.yaml")).read()
    with pytest.raises(ConfigDriftError, match=r"SOURCE_ONLY\.BASE_LR"):
        run_pipeline(tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.BASE_LR", "0.0123"))
    assert open(os.path.join(out, "config.yaml")).read() == record
    summary = run_pipeline(tiny_cfg(toy_root, out, *OPTS))  # the same config: skipped, same numbers
    assert summary["stages"][0]["mIoU"] == json.load(open(os.path.join(out, "summary.json")))["stages"][0]["mIoU"]


def test_diverging_lr_stops_the_stage_and_writes_no_nan_checkpoint(toy_root, tmp_path):
    out = str(tmp_path)
    cfg = tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.BASE_LR", "1e12")
    with pytest.raises(DivergenceError, match=r"iteration \d+") as info:
        run_pipeline(cfg)
    assert "Last good checkpoint" in str(info.value) and "--allow-config-change" in str(info.value)
    folder = os.path.join(out, "0_source_only")
    assert not os.path.exists(os.path.join(folder, "manifest.json"))  # the pipeline did not go on
    ckpts = os.path.join(folder, "checkpoints")
    saved = [f for f in os.listdir(ckpts) if f.endswith(".pth")] if os.path.isdir(ckpts) else []
    for f in saved:
        state = torch.load(os.path.join(ckpts, f), map_location="cpu", weights_only=False)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), f


def test_a_divergence_after_a_checkpoint_is_recovered_as_its_message_says(toy_root, tmp_path, monkeypatch):
    """A NaN loss at iteration 3, after the checkpoint of iteration 2: the message's recovery (a lower lr,
    rerun with --allow-config-change) resumes from that checkpoint; without the flag the rerun is refused."""
    real = SourceOnlyTrainer.run_step

    def nan_at_3(self, batch):
        logs = real(self, batch)
        return {**logs, "loss_seg": float("nan")} if self.iteration == 2 else logs

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", nan_at_3)
    out = str(tmp_path)
    with pytest.raises(DivergenceError, match="at iteration 3") as info:
        run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    assert "model_0000002.pth" in str(info.value) and "--allow-config-change" in str(info.value)
    monkeypatch.setattr(SourceOnlyTrainer, "run_step", real)
    lower = ("SOURCE_ONLY.BASE_LR", "1e-5")
    with pytest.raises(ConfigDriftError, match="SOURCE_ONLY.BASE_LR"):  # the lr is part of the recorded config
        run_pipeline(tiny_cfg(toy_root, out, *OPTS, *lower))
    run_pipeline(tiny_cfg(toy_root, out, *OPTS, *lower, "PIPELINE.ALLOW_CONFIG_CHANGE", "True"))
    with open(os.path.join(out, "0_source_only", "log.txt")) as f:
        assert "model_0000002.pth at iteration 2" in f.read()  # resumed there, not started afresh
    assert os.path.exists(os.path.join(out, "0_source_only", "manifest.json"))


def test_full_disk_while_saving_names_the_path_and_keeps_the_previous_checkpoint(toy_root, tmp_path, monkeypatch):
    out = str(tmp_path)
    trainer = SourceOnlyTrainer(tiny_cfg(toy_root, out, *OPTS), out, torch.device("cpu"))
    first = trainer.checkpointer.save("model_0000002", 2)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="model_0000004.pth.*No space left"):
        trainer.checkpointer.save("model_0000004", 4)
    monkeypatch.setattr(torch, "save", real_save)
    folder = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(folder)) == ["last_checkpoint", "model_0000002.pth"]  # no temp file left
    assert torch.load(first, map_location="cpu", weights_only=False)["iteration"] == 2
    assert trainer.checkpointer.find_resume_checkpoint() == first


def test_a_rerun_resumes_from_the_newest_checkpoint_whatever_the_pointer_says(toy_root, tmp_path, monkeypatch):
    """Killed after a checkpoint was written but before `last_checkpoint` was updated, the pointer names the one
    before: the rerun resumed there and redid a whole CHECKPOINT_PERIOD. A full disk at the pointer names it."""
    import spcl.engine.checkpoint as C

    out = str(tmp_path)
    trainer = SourceOnlyTrainer(tiny_cfg(toy_root, out, *OPTS), out, torch.device("cpu"))
    trainer.checkpointer.save("model_0000002", 2)
    newer = trainer.checkpointer.save("model_0000004", 4, pointer=False)  # the pointer still names iteration 2
    assert trainer.checkpointer.find_resume_checkpoint() == newer
    final = trainer.checkpointer.save("model_final", 6, periodic=False, pointer=False)
    assert trainer.checkpointer.find_resume_checkpoint() == final
    real_write = C.atomic_write

    def full_disk(path, write, **kwargs):
        def partial(f):
            f.write("model_")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, partial, **kwargs)

    monkeypatch.setattr(C, "atomic_write", full_disk)
    with pytest.raises(OSError, match=r"cannot write checkpoint pointer .*last_checkpoint: No space left"):
        trainer.checkpointer.save("model_0000008", 8)
    monkeypatch.setattr(C, "atomic_write", real_write)
    folder = os.path.join(out, "checkpoints")
    assert [f for f in os.listdir(folder) if not f.endswith(".pth")] == ["last_checkpoint"]  # no temp file left
    assert open(os.path.join(folder, "last_checkpoint")).read() == "model_0000002.pth"


def test_full_disk_inside_torch_save_still_names_the_path(toy_root, tmp_path, monkeypatch):
    # the real failure: the file fills up mid-write, torch.save's zip writer then raises
    # "RuntimeError: [enforce fail at inline_container.cc] unexpected pos" while handling the ENOSPC
    out = str(tmp_path)
    trainer = SourceOnlyTrainer(tiny_cfg(toy_root, out, *OPTS), out, torch.device("cpu"))
    first = trainer.checkpointer.save("model_0000002", 2)
    real_save = torch.save

    class FillsUp(io.RawIOBase):
        def __init__(self, f):
            self.f, self.written = f, 0

        def writable(self):
            return True

        def write(self, b):
            self.written += len(b)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, FillsUp(f), *a, **k))
    with pytest.raises(OSError, match="cannot write checkpoint .*model_0000004.pth: No space left") as info:
        trainer.checkpointer.save("model_0000004", 4)
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error stays in the chain
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["last_checkpoint", "model_0000002.pth"]
    assert trainer.checkpointer.find_resume_checkpoint() == first


def test_results_get_the_users_permissions(toy_root, tmp_path):
    old = os.umask(0o022)
    try:
        out = str(tmp_path)
        run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    finally:
        os.umask(old)
    for rel in ("summary.json", "config.yaml", "0_source_only/manifest.json",
                "0_source_only/checkpoints/model_final.pth", "0_source_only/metrics.json"):
        mode = stat.S_IMODE(os.stat(os.path.join(out, rel)).st_mode)
        assert mode == 0o644, (rel, oct(mode))


def test_a_bad_file_stops_the_stage_before_its_first_iteration(tmp_path):
    """A label whose size differs from its image (two public GTA5 codebases exclude such frames)
    stops the stage before iteration 1, naming the file, instead of at the iteration that draws it."""
    from PIL import Image

    from spcl.data.check import DataError
    from spcl.toy import generate_toy_dataset

    root = tmp_path / "data"
    generate_toy_dataset(root, seed=0, num_source=6, num_target_train=4, num_target_val=2, size=(64, 32))
    bad = root / "gta5" / "labels" / "00004.png"
    Image.open(bad).resize((32, 16)).save(bad)
    out = str(tmp_path / "run")
    with pytest.raises(DataError, match="00004.png") as info:
        run_pipeline(tiny_cfg(str(root), out, *OPTS))
    assert "check_data.py" in str(info.value)
    assert not os.path.exists(os.path.join(out, "0_source_only", "checkpoints"))  # no iteration ran
    # the fix the message points to, a list without the file, is a rerun with another config: the stopped
    # run made nothing with its recorded one, so the rerun goes on, and its config becomes config.yaml (the
    # record of what made the results; the unused one is kept beside it), in the run's and the stage's folder
    clean = tmp_path / "clean.txt"
    clean.write_text("".join(f"{n}\n" for n in sorted(os.listdir(root / "gta5" / "images")) if n != "00004.png"))
    fixed = tiny_cfg(str(root), out, *OPTS, "DATASETS.SOURCE_LIST", str(clean))
    run_pipeline(fixed)
    assert os.path.isfile(os.path.join(out, "0_source_only", "manifest.json"))
    for folder in (out, os.path.join(out, "0_source_only")):
        with open(os.path.join(folder, "config.yaml")) as f:
            assert f.read() == fixed.dump()
        unused = [f for f in os.listdir(folder) if f.startswith("config_") and f.endswith(".yaml")]
        assert len(unused) == 1 and unused[0].startswith("config_unused_"), unused
        with open(os.path.join(folder, unused[0])) as f:
            assert "SOURCE_LIST: ''" in f.read()
    with pytest.raises(ConfigDriftError, match="SOURCE_LIST"):  # now it has made something, which is protected
        run_pipeline(tiny_cfg(str(root), out, *OPTS))


@pytest.mark.parametrize("made", [None, "checkpoints/model_0000002.pth", "checkpoints/last_checkpoint",
                                  "manifest.json"])
def test_the_recorded_config_is_protected_once_the_run_has_made_something(toy_root, tmp_path, made):
    """check_run, before anything is written: a changed config is refused as soon as a folder of the run
    holds a checkpoint or a finished stage's manifest, and not while it holds only the records of a run
    that stopped before its first iteration (config.yaml, env.txt, log.txt, upstream.json)."""
    from spcl.engine.pipeline import check_run
    from spcl.utils.env import write_run_info

    out = str(tmp_path / "run")
    write_run_info(tiny_cfg(toy_root, out, *OPTS), out)
    write_run_info(tiny_cfg(toy_root, out, *OPTS), os.path.join(out, "0_source_only"))
    for record in ("log.txt", "upstream.json"):
        open(os.path.join(out, "0_source_only", record), "w").close()
    os.makedirs(os.path.join(out, "0_source_only", "checkpoints"))
    if made:
        open(os.path.join(out, "0_source_only", made), "w").close()
    changed = tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.BASE_LR", "0.0123")
    if made:
        with pytest.raises(ConfigDriftError, match=r"SOURCE_ONLY\.BASE_LR"):
            check_run(changed, datasets=False)
    else:
        check_run(changed, datasets=False)


def test_a_copied_run_folder_hands_on_its_own_files(toy_root, tmp_path):
    """Manifests hold hand-off paths relative to OUTPUT_DIR: copy a finished run, delete its last stage
    and rerun the copy; the rerun stage reads the copy's checkpoint, not the original's."""
    import shutil

    opts = ("SOURCE_ONLY.STOP_ITER", "2", "SOURCE_ONLY.MAX_ITER", "10", "PIPELINE.STAGES", "['source_only', 'prototypes']")
    original = str(tmp_path / "original")
    run_pipeline(tiny_cfg(toy_root, original, *opts))
    copy = str(tmp_path / "copy")
    shutil.copytree(original, copy)
    shutil.rmtree(os.path.join(copy, "1_prototypes"))
    shutil.rmtree(os.path.join(original, "0_source_only", "checkpoints"))  # the original can no longer serve
    run_pipeline(tiny_cfg(toy_root, copy, *opts))
    manifest = json.load(open(os.path.join(copy, "1_prototypes", "manifest.json")))
    assert manifest["inputs"]["checkpoint"] == os.path.join("0_source_only", "checkpoints", "model_final.pth")
    weights = [ln for ln in open(os.path.join(copy, "1_prototypes", "config.yaml")) if ln.strip().startswith("WEIGHTS:")]
    assert weights and copy in weights[0]


def test_every_missing_input_is_listed_before_the_run_starts(tmp_path):
    """Missing weights and the three missing dataset folders (source, target, val) are reported together,
    before any stage runs."""
    out = str(tmp_path / "run")
    cfg = tiny_cfg(str(tmp_path / "no_data"), out, *OPTS, "MODEL.WEIGHTS", str(tmp_path / "resnet.pth"))
    with pytest.raises(FileNotFoundError) as info:
        run_pipeline(cfg)
    text = str(info.value)
    assert "4 input(s)" in text and "resnet.pth" in text and "cityscapes_train" in text and "gta5_train" in text and "cityscapes_val" in text
    assert not os.path.exists(out)


def test_check_run_without_datasets_reads_no_data(tmp_path):
    """`check_run(cfg, datasets=False)` checks the plan, the weights and the run folder, not the data folders
    (the caller checks those itself, or has already); check_inputs with them names the missing sets."""
    from spcl.engine.pipeline import check_inputs, check_run

    cfg = tiny_cfg(str(tmp_path / "no_data"), str(tmp_path / "run"), *OPTS)
    check_run(cfg, datasets=False)
    with pytest.raises(FileNotFoundError, match=r"^3 input\(s\) of this run are missing"):
        check_inputs(cfg)
    # one missing set read in two roles (the oracle's source is the target) is named once
    cfg = tiny_cfg(str(tmp_path / "no_data"), str(tmp_path / "run"), *OPTS, "DATASETS.SOURCE", cfg.DATASETS.TARGET)
    with pytest.raises(FileNotFoundError, match=r"^2 input\(s\) of this run are missing") as err:
        check_inputs(cfg)
    assert str(err.value).count(f"- {cfg.DATASETS.TARGET}: ") == 1


def test_oracle_pseudo_labels_on_a_target_without_labels_are_refused_before_the_run(toy_root, tmp_path):
    """PSEUDO.ORACLE writes the target's ground truth: a target training image without a label file is
    named before warm-up runs, not when the pseudo-label stage reaches it."""
    import glob
    import shutil

    from spcl.engine.pipeline import check_inputs

    root = str(tmp_path / "toy")
    shutil.copytree(toy_root, root)
    label = sorted(glob.glob(os.path.join(root, "cityscapes", "gtFine", "train", "*", "*_labelIds.png")))[3]
    os.remove(label)
    out = str(tmp_path / "run")
    check_inputs(tiny_cfg(root, out, *OPTS))  # without the oracle the target's labels are optional
    with pytest.raises(FileNotFoundError, match=r"1 input\(s\) of this run are missing:\n  - cityscapes_train: 1 of 8 "
                                                r"images have no label file \(e\.g\. .*_leftImg8bit\.png\), and "
                                                r"PSEUDO\.ORACLE 'kept' writes their ground truth"):
        run_pipeline(tiny_cfg(root, out, *OPTS, "PSEUDO.ORACLE", "kept"))
    assert not os.path.exists(out)


@pytest.fixture(scope="module")
def finished_run(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("finished"))
    run_pipeline(tiny_cfg(toy_root, out, *TWO_STAGES))
    return out


TWO_STAGES = ("SOURCE_ONLY.STOP_ITER", "2", "PIPELINE.STAGES", "['source_only', 'prototypes']")


@pytest.mark.parametrize("damaged, content, says", [
    ("0_source_only/manifest.json", b'{"stage": "source_only", "sta', "is not valid JSON (Unterminated string"),
    ("1_prototypes/manifest.json", b"[1, 2]", "holds a JSON list, not the object a stage writes"),
    ("1_prototypes/upstream.json", b"", "is not valid JSON (Expecting value: line 1 column 1"),
    ("config.yaml", b"MODEL:\n  BACKBONE: [\n", "is not valid YAML (while parsing a flow node"),
    ("config.yaml", b"", "is empty"),
    ("0_source_only/config.yaml", b"\xff\xfe\x00", "is not valid YAML ("),
])
def test_a_damaged_run_record_is_named_and_left_as_it_is(finished_run, toy_root, tmp_path, damaged, content, says):
    """A manifest, upstream.json or recorded config damaged outside the run (a copy cut short, an edit):
    one error naming the file and the way out, and nothing rewritten; restored, the rerun skips as before."""
    import shutil

    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    path = os.path.join(out, damaged)
    original = open(path, "rb").read() if os.path.exists(path) else None
    if damaged.endswith("upstream.json"):  # an unfinished stage: its record of what it started after
        os.remove(os.path.join(out, "1_prototypes", "manifest.json"))
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError) as err:
        run_pipeline(tiny_cfg(toy_root, out, *TWO_STAGES))
    message = str(err.value)
    assert message.startswith(f"{path} {says}"), message
    folder = os.path.dirname(path)
    assert (f"delete {folder} to run that stage" if folder != out else "choose a new OUTPUT_DIR") in message
    assert open(path, "rb").read() == content and not [f for f in os.listdir(out) if ".stale-" in f]
    if original is not None:
        with open(path, "wb") as f:
            f.write(original)
        summary = run_pipeline(tiny_cfg(toy_root, out, *TWO_STAGES))
        # the same results; a stage run again (the prototypes, for a damaged upstream.json) took its own time
        assert _untimed(summary) == _untimed(json.load(open(os.path.join(finished_run, "summary.json"))))


def _untimed(summary: dict) -> dict:
    return {**summary, "stages": [{k: v for k, v in row.items() if k != "seconds"} for row in summary["stages"]]}


@pytest.mark.parametrize("stages, opts, says", [
    ("[]", (), "PIPELINE.STAGES is empty"),
    ("['adv_warmup', 'align']", (), "stage 1 of PIPELINE.STAGES, align, reads prototypes, and no stage before it "
                                    "makes it (['adv_warmup']): add the stage that makes it earlier, or set "
                                    "PROTOTYPE.PATH"),
    ("['adv_warmup', 'prototypes', 'align']", (), "align, reads pseudo dir, and no stage before it makes it"),
    ("['prototypes']", (), "prototypes, reads checkpoint, and it is the first stage: add the stage that makes it "
                           "earlier, or set MODEL.WEIGHTS"),
    ("['source_only', 'self_train']", (), "self_train, reads pseudo dir"),
    ("['source_only', 'pseudo_labels', 'self_train']", ("SOLVER.ACCUM_STEPS", "2", "SELF_TRAIN.TARGET_BATCH", "3"),
     "SELF_TRAIN.TARGET_BATCH 3 does not split into 1 process(es) × SOLVER.ACCUM_STEPS 2 equal parts (stage "
     "self_train): make it a multiple of 2"),
])
def test_a_plan_that_cannot_run_is_refused_before_the_first_stage(toy_root, tmp_path, stages, opts, says):
    """Stage inputs missing from the plan, and batches that do not split, used to stop the run only when
    their stage came, after the stages before it had trained."""
    from spcl.engine.pipeline import check_run

    with pytest.raises(ValueError) as info:
        check_run(tiny_cfg(toy_root, str(tmp_path), "PIPELINE.STAGES", stages, *opts), datasets=False)
    assert says in str(info.value)


@pytest.mark.parametrize("stages, opts", [
    ("['adv_warmup', 'align']", ("PROTOTYPE.PATH", "p.pth", "LOSS.CONTRAST.TARGET", "False")),
    ("['adv_warmup', 'prototypes', 'align']", ("ALIGN.TARGET_MASK", "online")),
    ("['prototypes', 'pseudo_labels', 'self_train']", ("MODEL.WEIGHTS", "w.pth")),
    ("['source_only', 'self_train']", ("DATASETS.PSEUDO_DIR", "labels", "SOLVER.ACCUM_STEPS", "2")),
])
def test_a_plan_whose_inputs_come_from_the_config_passes(toy_root, tmp_path, stages, opts):
    from spcl.engine.pipeline import check_stage_plan

    check_stage_plan(tiny_cfg(toy_root, str(tmp_path), "PIPELINE.STAGES", stages, *opts))


@pytest.mark.parametrize("batch, accum, fits", [(6, 1, True), (3, 1, False), (4, 2, True), (6, 2, False)])
def test_a_batch_splits_over_the_processes_first_then_over_accumulation(toy_root, tmp_path, monkeypatch, batch,
                                                                           accum, fits):
    """Two processes: each takes batch / 2 images per step, which SOLVER.ACCUM_STEPS must split again (6 over
    2 processes is 3 each, which 2 steps cannot split, though 6 is a multiple of 2)."""
    from spcl.engine import pipeline

    monkeypatch.setattr(pipeline.comm, "get_world_size", lambda: 2)
    cfg = tiny_cfg(toy_root, str(tmp_path), "SOLVER.ACCUM_STEPS", str(accum), "SELF_TRAIN.TARGET_BATCH", str(batch))
    if fits:
        pipeline.check_batches(cfg, "self_train")
    else:
        with pytest.raises(ValueError, match=rf"^SELF_TRAIN.TARGET_BATCH {batch} does not split into 2 process\(es\) "
                                             rf"× SOLVER.ACCUM_STEPS {accum} equal parts \(stage self_train\): make "
                                             rf"it a multiple of {2 * accum}$"):
            pipeline.check_batches(cfg, "self_train")


@pytest.mark.parametrize("target", [True, False])
def test_the_target_batch_of_align_is_checked_only_with_the_target_term(toy_root, tmp_path, monkeypatch, target):
    """ALIGN.TARGET_BATCH is read only with LOSS.CONTRAST.TARGET: without it, a batch that two processes cannot
    split is no reason to refuse the run."""
    from spcl.engine import pipeline

    monkeypatch.setattr(pipeline.comm, "get_world_size", lambda: 2)
    cfg = tiny_cfg(toy_root, str(tmp_path), "ALIGN.TARGET_BATCH", "3", "LOSS.CONTRAST.TARGET", str(target))
    if target:
        with pytest.raises(ValueError, match="^ALIGN.TARGET_BATCH 3 does not split into 2 process"):
            pipeline.check_batches(cfg, "align")
    else:
        pipeline.check_batches(cfg, "align")


def test_a_resume_past_a_lowered_stop_iter_is_refused(toy_root, tmp_path, monkeypatch):
    """A stage stopped at iteration 4 (checkpoint at 4), rerun with STOP_ITER 3: its weights have trained
    further than the config says, so it stops naming both numbers instead of recording a 4-iteration model
    as a 3-iteration stage."""
    out = str(tmp_path)
    _killed_run(toy_root, out, monkeypatch, 4)
    with pytest.raises(ValueError, match=r"resumes from iteration 4 \(.*model_0000004\.pth\), past "
                                         r"SOURCE_ONLY\.STOP_ITER 3: give STOP_ITER >= 4"):
        run_stage(tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.STOP_ITER", "3", "PIPELINE.ALLOW_CONFIG_CHANGE", "True"),
                  "source_only", out)
    assert not os.path.exists(os.path.join(out, "checkpoints", "model_final.pth"))


def test_best_handoff_of_a_resumed_stage_is_the_uninterrupted_runs(toy_root, tmp_path, monkeypatch):
    """PIPELINE.HANDOFF best with scripted target-val scores 5, 9, 7, 6 | 8 (iterations 1-5): killed after
    iteration 4 and resumed, the stage hands on iteration 2's checkpoint, as the uninterrupted run does (the
    resumed hook used to start from nothing and hand on iteration 5's)."""
    script = {1: 5.0, 2: 9.0, 3: 7.0, 4: 6.0, 5: 8.0}
    real = SourceOnlyTrainer.evaluate

    def scripted(self):
        metrics = real(self)
        metrics["mIoU"] = script[self.iteration + 1]
        return metrics

    monkeypatch.setattr(SourceOnlyTrainer, "evaluate", scripted)
    opts = ("PIPELINE.HANDOFF", "best", "SOLVER.EVAL_PERIOD", "1")
    full = str(tmp_path / "full")
    whole = run_stage(tiny_cfg(toy_root, full, *OPTS, *opts), "source_only", full)
    out = str(tmp_path / "resumed")
    _killed_run(toy_root, out, monkeypatch, 4, *opts)
    resumed = run_stage(tiny_cfg(toy_root, out, *OPTS, *opts), "source_only", out)
    for result in (whole, resumed):
        assert "iteration 2, mIoU 9.00" in result["handoff"] and result["metrics"]["mIoU"] == 9.0
        assert result["last_metrics"]["mIoU"] == 8.0
    assert torch.equal(torch.load(resumed["outputs"]["checkpoint"], weights_only=False)["model"]["head.convs.0.weight"],
                       torch.load(whole["outputs"]["checkpoint"], weights_only=False)["model"]["head.convs.0.weight"])
    # a stage that starts anew (nothing to resume) does not keep a best left in its folder by another attempt
    fresh = tmp_path / "fresh"
    (fresh / "checkpoints").mkdir(parents=True)
    stale = torch.load(whole["outputs"]["checkpoint"], weights_only=False)
    stale["metrics"]["mIoU"] = 99.0
    torch.save(stale, fresh / "checkpoints" / "model_best.pth")
    again = run_stage(tiny_cfg(toy_root, str(fresh), *OPTS, *opts), "source_only", str(fresh))
    assert "iteration 2, mIoU 9.00" in again["handoff"]


def test_diverged_weights_are_neither_evaluated_nor_kept_as_the_best(toy_root, tmp_path, monkeypatch):
    """Weights turned NaN in iteration 2, whose evaluation is due (and whose log is not, so no earlier check
    sees them): the stage stops before evaluating, and no model_best.pth holds them."""
    real = SourceOnlyTrainer.run_step

    def nan_in_2(self, batch):
        logs = real(self, batch)
        if self.iteration == 1:
            with torch.no_grad():
                next(self.modules["model"].parameters()).fill_(float("nan"))
        return logs

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", nan_in_2)
    out = str(tmp_path)
    with pytest.raises(DivergenceError, match="non-finite weights in 'model' at iteration 2"):
        run_pipeline(tiny_cfg(toy_root, out, *OPTS, "SOLVER.EVAL_PERIOD", "2", "SOLVER.LOG_PERIOD", "5",
                              "PIPELINE.HANDOFF", "best"))
    assert not os.path.exists(os.path.join(out, "0_source_only", "checkpoints", "model_best.pth"))


def test_diverged_weights_are_not_saved_by_a_periodic_checkpoint(toy_root, tmp_path, monkeypatch):
    """One weight turned NaN in iteration 2, whose checkpoint is due (and whose log, the other check, is not):
    the stage stops naming iteration 2 and writes no model_0000002.pth, so a rerun resumes from good weights."""
    real = SourceOnlyTrainer.run_step

    def nan_in_2(self, batch):
        logs = real(self, batch)
        if self.iteration == 1:
            with torch.no_grad():
                next(self.modules["model"].parameters()).view(-1)[7] = float("nan")  # one element of many
        return logs

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", nan_in_2)
    out = str(tmp_path)
    with pytest.raises(DivergenceError, match="non-finite weights in 'model' at iteration 2"):
        run_stage(tiny_cfg(toy_root, out, *OPTS, "SOLVER.LOG_PERIOD", "5"), "source_only", out)
    folder = os.path.join(out, "checkpoints")
    assert not os.path.isdir(folder) or not [f for f in os.listdir(folder) if f.endswith(".pth")]


def test_a_non_finite_diagnostic_does_not_stop_the_stage(toy_root, tmp_path, monkeypatch):
    """Only the losses are checked for divergence: a logged diagnostic that is not a loss (here a gradient ratio
    whose denominator was zero) may be NaN or infinite; the stage goes on and metrics.json holds it as null."""
    real = SourceOnlyTrainer.run_step

    def step(self, batch):
        logs = real(self, batch)
        return {**logs, "grad_ratio_src": float("nan") if self.iteration == 1 else float("inf")}

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", step)
    out = str(tmp_path)
    result = run_stage(tiny_cfg(toy_root, out, *OPTS, "SOURCE_ONLY.STOP_ITER", "3"), "source_only", out)
    assert result["iteration"] == 3
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [r for r in map(json.loads, f) if "loss_seg" in r]
    assert [(r["iteration"], r["grad_ratio_src"]) for r in rows] == [(1, None), (2, None), (3, None)]
