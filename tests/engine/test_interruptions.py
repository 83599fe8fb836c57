"""A run killed at the awkward moments, then rerun with the same command: during a periodic evaluation
(which the resume point must not skip), before a stage's first checkpoint, between an offline stage's
metrics and its manifest, after the final checkpoint and before the manifest, and in the middle of an
atomic write. Each ends as an uninterrupted run does: the same choices and weights, one record per
iteration in metrics.json and TensorBoard, and no temp file left behind."""
import json
import os

import pytest
import torch

from conftest import tb_scalars, tiny_cfg
from spcl.engine import run_pipeline
from spcl.engine.stages import SourceOnlyTrainer
from spcl.utils.io import atomic_write

# On the CPU also where a GPU is present: a resumed run must equal an uninterrupted one bit for bit.
pytestmark = pytest.mark.usefixtures("on_the_cpu")

OPTS = ("PIPELINE.STAGES", "['source_only', 'prototypes']", "SOURCE_ONLY.STOP_ITER", "6", "SOURCE_ONLY.MAX_ITER",
        "10", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.EVAL_PERIOD", "2", "PIPELINE.HANDOFF", "best")


class Killed(BaseException):
    """What a SIGKILL leaves: the process stops there (nothing of it is caught by the code under test)."""


def records(out, stage="0_source_only"):
    with open(os.path.join(out, stage, "metrics.json")) as f:
        return [(r["iteration"], sorted(k for k in r if k not in ("sec_per_iter", "peak_mem_mb")))
                for r in map(json.loads, f)]


def final_weights(out):
    return torch.load(os.path.join(out, "0_source_only", "checkpoints", "model_final.pth"), map_location="cpu",
                      weights_only=False)["model"]


@pytest.fixture(scope="module")
def uninterrupted(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full"))
    return out, run_pipeline(tiny_cfg(toy_root, out, *OPTS))


def assert_same_run(out, full):
    """The records, the handed-on choice, the final weights and the prototypes of an uninterrupted run."""
    assert records(out) == records(full)
    assert records(out, "1_prototypes") == records(full, "1_prototypes")
    for stage in ("0_source_only", "1_prototypes"):
        tb, tb_full = tb_scalars(os.path.join(out, stage, "tb")), tb_scalars(os.path.join(full, stage, "tb"))
        assert {k: len(v) for k, v in tb.items()} == {k: len(v) for k, v in tb_full.items()}, stage
        timing = ("sec_per_iter", "peak_mem_mb")
        assert {k: repr(v) for k, v in tb.items() if not k.endswith(timing)} == \
            {k: repr(v) for k, v in tb_full.items() if not k.endswith(timing)}, stage  # in step order; NaN == NaN
    with open(os.path.join(out, "0_source_only", "manifest.json")) as f, \
            open(os.path.join(full, "0_source_only", "manifest.json")) as g:
        assert json.load(f)["metrics"] == json.load(g)["metrics"]  # the best checkpoint's, handed on
    a, b = final_weights(out), final_weights(full)
    assert all(torch.equal(a[k], b[k]) for k in b)
    rng = [torch.load(os.path.join(run, "0_source_only", "checkpoints", "model_final.pth"), weights_only=False)["rng"]
           for run in (out, full)]  # the random state too: a resume left it advanced by the loaders' seed draws
    assert torch.equal(rng[0]["torch"], rng[1]["torch"]) and repr(rng[0]["numpy"]) == repr(rng[1]["numpy"])
    p = torch.load(os.path.join(out, "1_prototypes", "prototypes.pth"), weights_only=False)["prototypes"]
    q = torch.load(os.path.join(full, "1_prototypes", "prototypes.pth"), weights_only=False)["prototypes"]
    assert torch.equal(p, q)
    leftovers = [os.path.join(r, n) for r, _, files in os.walk(out) for n in files if n.startswith(".tmp_")]
    assert [p for p in leftovers if ".stale-" not in p] == []  # (a folder set aside keeps what it held)


@pytest.mark.parametrize("at", [4, 6])
def test_killed_during_an_evaluation(uninterrupted, toy_root, tmp_path, monkeypatch, at):
    """The evaluation of iteration 4 comes before its checkpoint: the rerun resumes from 2 and evaluates 4
    again. (Saved first, the resume from 4 skipped that evaluation, and HANDOFF best chose from fewer.)
    The final one (6) comes after model_final: the rerun resumes there and evaluates 6 once more, and its
    scalars reach TensorBoard (the killed attempt never wrote them)."""
    real = SourceOnlyTrainer.evaluate_and_log

    def killed_at_4(self, iteration):
        if iteration == at:
            raise Killed
        return real(self, iteration)

    monkeypatch.setattr(SourceOnlyTrainer, "evaluate_and_log", killed_at_4)
    out = str(tmp_path)
    with pytest.raises(Killed):
        run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    monkeypatch.setattr(SourceOnlyTrainer, "evaluate_and_log", real)
    run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    assert_same_run(out, uninterrupted[0])


def raise_in_iteration(monkeypatch, number: int, error: type) -> None:
    """source_only's step raises `error` in its `number`-th iteration (the log's count, from 1)."""
    real = SourceOnlyTrainer.run_step

    def step(self, batch):
        if self.iteration == number - 1:
            raise error
        return real(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", step)


def test_a_stage_that_stops_with_an_error_ends_its_loader_workers(toy_root, tmp_path, monkeypatch):
    """A caller that keeps the error (a notebook, pytest.raises) keeps the stage's frames through its
    traceback; the data-loader workers must not live on with them until garbage collection."""
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    seen = []
    real = SourceOnlyTrainer.run_step

    def step(self, batch):
        seen.extend(p.pid for p in multiprocessing.active_children() if p.pid not in before)
        if self.iteration == 2:
            raise RuntimeError("boom")
        return real(self, batch)

    monkeypatch.setattr(SourceOnlyTrainer, "run_step", step)
    cfg = tiny_cfg(toy_root, str(tmp_path), *OPTS, "DATALOADER.NUM_WORKERS", "1")
    with pytest.raises(RuntimeError, match="boom") as kept:
        run_pipeline(cfg)
    assert seen  # the stage ran with worker processes
    alive = [p.pid for p in multiprocessing.active_children() if p.pid in set(seen)]
    assert alive == [] and kept.value is not None


def test_killed_before_the_first_checkpoint(uninterrupted, toy_root, tmp_path, monkeypatch):
    """Iteration 1 was logged, then the kill: the rerun starts afresh and logs iteration 1 once."""
    raise_in_iteration(monkeypatch, 2, Killed)
    out = str(tmp_path)
    with pytest.raises(Killed):
        run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    assert [i for i, _ in records(out)] == [1]
    monkeypatch.undo()
    run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    assert_same_run(out, uninterrupted[0])


@pytest.mark.parametrize("stage, temps", [
    ("1_prototypes", [".tmp_summary.json", "1_prototypes/.tmp_x.json"]),
    ("0_source_only", ["0_source_only/checkpoints/.tmp_y.pth", "0_source_only/.tmp_z.json"])])
def test_killed_before_a_manifest_and_in_atomic_writes(uninterrupted, toy_root, tmp_path, stage, temps):
    """A finished run whose stage never wrote its manifest (killed after the prototypes' metrics, or after
    the final evaluation of source_only), with temp files of writes cut short: the rerun redoes that
    stage's work once (the prototypes, the final evaluation) and removes the temp files."""
    out = str(tmp_path)
    run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    os.remove(os.path.join(out, stage, "manifest.json"))
    for t in temps:
        with open(os.path.join(out, t), "wb") as f:
            f.write(b"\0" * 100)
    run_pipeline(tiny_cfg(toy_root, out, *OPTS))
    assert_same_run(out, uninterrupted[0])


def test_ctrl_c_in_a_checkpoint_write_is_an_interrupt_and_keeps_the_previous_file(tmp_path):
    """torch.save's zip writer turns a KeyboardInterrupt into `RuntimeError: … unexpected pos …`; the
    write is an interrupt again (the tools say how to resume), the temp file goes, the old file stays."""
    path = str(tmp_path / "model.pth")
    with open(path, "w") as f:
        f.write("previous")

    def interrupted_in_torch_save(f):
        f.write(b"partial")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 50539968 vs 50539860")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted_in_torch_save, what="checkpoint")
    assert open(path).read() == "previous" and os.listdir(tmp_path) == ["model.pth"]
    with pytest.raises(RuntimeError, match="unexpected pos"):  # other errors are left as they are
        atomic_write(path, lambda f: (_ for _ in ()).throw(RuntimeError("unexpected pos 1 vs 0")))


def test_ctrl_c_names_the_iteration_as_the_log_counts_it(toy_root, tmp_path, monkeypatch):
    """Interrupted in the 3rd iteration (the log has shown `iter 2/6`): "during iteration 3"."""
    raise_in_iteration(monkeypatch, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt, match="during iteration 3 of stage source_only .*model_0000002.pth"):
        run_pipeline(tiny_cfg(toy_root, str(tmp_path), *OPTS))


def test_ctrl_c_in_a_periodic_evaluation_says_so(toy_root, tmp_path, monkeypatch):
    """Interrupted in the evaluation after iteration 4 (EVAL_PERIOD 2): iteration 4 had finished, so the line
    names the evaluation, not "iteration 4" (nor 5, which had not started)."""
    real = SourceOnlyTrainer.evaluate_and_log

    def evaluate(self, iteration):
        if iteration == 4:
            raise KeyboardInterrupt
        return real(self, iteration)

    monkeypatch.setattr(SourceOnlyTrainer, "evaluate_and_log", evaluate)
    with pytest.raises(KeyboardInterrupt, match=r"during the evaluation after iteration 4 of stage source_only "
                                                r"\(last checkpoint: .*model_0000002.pth\)"):
        run_pipeline(tiny_cfg(toy_root, str(tmp_path), *OPTS))


def test_the_best_checkpoint_records_its_config_and_loads_safely(uninterrupted):
    """model_best.pth, what HANDOFF best hands on, carries the config like every stage checkpoint (for
    `convert_checkpoint.py --print-config`), and loads with the restricted loader."""
    from spcl.utils.safe_load import load_checkpoint

    folder = os.path.join(uninterrupted[0], "0_source_only")
    best = load_checkpoint(os.path.join(folder, "checkpoints", "model_best.pth"))
    with open(os.path.join(folder, "config.yaml")) as f:
        assert best["config"] == f.read()
    assert best["oracle"] is True and best["metrics"]["mIoU"] == max(
        r["val/mIoU"] for r in map(json.loads, open(os.path.join(folder, "metrics.json"))) if "val/mIoU" in r)


def test_a_temp_file_of_a_live_writer_is_kept(tmp_path):
    """Only what a dead process left goes: a tool writing into the folder as a run starts keeps its file."""
    import subprocess
    import sys

    from spcl.utils.io import remove_temp_files

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    names = [f".tmp_{os.getpid()}_abc.pth", f".tmp_{dead}_def.pth", ".tmp_ghi.json", "model.pth"]
    for n in names:
        (tmp_path / n).write_text("x")
    assert remove_temp_files(str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == sorted([f".tmp_{os.getpid()}_abc.pth", "model.pth"])
    atomic_write(str(tmp_path / "x.json"), lambda f: f.write(b"{}"))  # its own temp file carries its pid
    (tmp_path / "x.json").unlink()


def _killed_then_rerun(toy_root, tmp_path, monkeypatch, stage, module, name, kill_at, between=lambda out: None):
    """Run source_only → `stage` uninterrupted (into `full`), then into `out` killed at the `kill_at`-th call of
    `module.name` (once per batch of the stage's pass, TEST.BATCH_SIZE 2), `between(out)`, and rerun; returns
    (full, out, calls of `module.name` in the rerun)."""
    opts = ("PIPELINE.STAGES", f"['source_only', '{stage}']", "SOURCE_ONLY.STOP_ITER", "2",
            "SOURCE_ONLY.MAX_ITER", "2", "TEST.BATCH_SIZE", "2")
    full, out = str(tmp_path / "full"), str(tmp_path / "run")
    run_pipeline(tiny_cfg(toy_root, full, *opts))
    real, calls = getattr(module, name), []

    def counting(*args, kill=False, **kwargs):
        calls.append(1)
        if kill and len(calls) == kill_at:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, lambda *a, **k: counting(*a, kill=True, **k))
    with pytest.raises(Killed):
        run_pipeline(tiny_cfg(toy_root, out, *opts))
    between(out)
    calls.clear()
    monkeypatch.setattr(module, name, counting)
    run_pipeline(tiny_cfg(toy_root, out, *opts))
    return full, out, len(calls)


def test_pseudo_labels_killed_midway_predict_only_the_rest_on_the_rerun(toy_root, tmp_path, monkeypatch, spcl_log):
    """A kill in the pseudo-label pass after 2 of the 8 target images: the rerun runs the model on the other 6
    and writes the labels and thresholds.json of an uninterrupted run, byte for byte."""
    import spcl.pseudo.generate as generate

    full, out, calls = _killed_then_rerun(toy_root, tmp_path, monkeypatch, "pseudo_labels", generate,
                                          "predict_probs", kill_at=2)
    assert calls == 3  # batches of 2
    assert "pseudo labels: 2 of 8 image(s) predicted by an interrupted run with the same model and config; the " \
           "model ran on the other 6" in spcl_log.text
    labels = os.path.join("1_pseudo_labels", "labels")
    names = sorted(os.listdir(os.path.join(full, labels)))
    assert len(names) == 9 and sorted(os.listdir(os.path.join(out, labels))) == names  # 8 PNGs, thresholds.json
    for name in names:
        with open(os.path.join(out, labels, name), "rb") as f, open(os.path.join(full, labels, name), "rb") as g:
            assert f.read() == g.read(), name


def test_prototypes_killed_midway_continue_from_the_saved_sums_on_the_rerun(toy_root, tmp_path, monkeypatch,
                                                                             spcl_log):
    """A kill in the prototype pass after 2 of its 4 batches (sums saved after each, SAVE_PERIOD_S 0): the rerun
    runs the model on the last 2 and writes the prototypes of an uninterrupted run, bit for bit."""
    import spcl.engine.stages.prototypes as stage
    import spcl.prototypes.extract as extract

    partial = []
    monkeypatch.setattr(stage, "SAVE_PERIOD_S", 0.0)
    full, out, calls = _killed_then_rerun(toy_root, tmp_path, monkeypatch, "prototypes", extract, "source_mask",
                                          kill_at=3, between=lambda out: partial.extend(
                                              os.listdir(os.path.join(out, "1_prototypes", ".partial"))))
    assert partial == ["rank0.pth"]  # what the killed run left
    assert calls == 2
    assert "prototypes: resuming after 4 source image(s) this process summed in an interrupted run" in spcl_log.text
    a, b = (torch.load(os.path.join(run, "1_prototypes", "prototypes.pth")) for run in (out, full))
    assert torch.equal(a["prototypes"], b["prototypes"]) and torch.equal(a["counts"], b["counts"])
    assert not os.path.exists(os.path.join(out, "1_prototypes", ".partial"))
