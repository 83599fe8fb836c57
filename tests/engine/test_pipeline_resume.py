"""The whole pipeline on the tiny dataset: every stage's outputs, skip of finished stages, and a run
killed in the middle of `align` that, resumed, ends with exactly the weights of an uninterrupted run."""
import json
import os

import pytest
import torch

from conftest import tb_scalars, tiny_cfg
from spcl.engine import run_pipeline
from spcl.engine.pipeline import stage_plan
from spcl.engine.stages import AlignTrainer

# On the CPU also where a GPU is present: a resumed run must equal an uninterrupted one bit for bit,
# which only the CPU guarantees (conftest.hide_gpu).
pytestmark = pytest.mark.usefixtures("on_the_cpu")

STAGE_DIRS = ["0_adv_warmup", "1_prototypes", "2_pseudo_labels", "3_align", "4_pseudo_labels", "5_self_train"]


def _opts():
    return ["ALIGN.STOP_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "2"]


def yaml_config(path):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def _final_state(out):
    return torch.load(os.path.join(out, "5_self_train", "checkpoints", "model_final.pth"), map_location="cpu",
                      weights_only=False)["model"]


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def uninterrupted(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full"))
    summary = run_pipeline(tiny_cfg(toy_root, out, *_opts()))
    return out, summary


def test_pipeline_writes_every_stage(uninterrupted):
    out, summary = uninterrupted
    assert [s["stage"] for s in summary["stages"]] == [d.split("_", 1)[1] for d in STAGE_DIRS]
    for d in STAGE_DIRS:
        manifest = json.load(open(os.path.join(out, d, "manifest.json")))
        assert manifest["status"] == "done"
        assert os.path.isfile(os.path.join(out, d, "config.yaml"))
    align = json.load(open(os.path.join(out, "3_align", "manifest.json")))
    # inputs were handed on by the manifests of the earlier stages, not typed by hand, as paths
    # relative to OUTPUT_DIR (a copied run folder stays self-contained)
    assert align["inputs"]["checkpoint"] == os.path.join("0_adv_warmup", "checkpoints", "model_final.pth")
    assert align["inputs"]["prototypes"] == os.path.join("1_prototypes", "prototypes.pth")
    assert align["inputs"]["pseudo_dir"] == os.path.join("2_pseudo_labels", "labels")
    st = json.load(open(os.path.join(out, "5_self_train", "manifest.json")))
    assert st["inputs"]["pseudo_dir"] == os.path.join("4_pseudo_labels", "labels")
    assert st["inputs"]["checkpoint"] == os.path.join("3_align", "checkpoints", "model_final.pth")
    cfg = yaml_config(os.path.join(out, "5_self_train", "config.yaml"))
    assert cfg["MODEL"]["WEIGHTS"] == os.path.join(out, "3_align", "checkpoints", "model_final.pth")
    assert "mIoU" in st["metrics"]
    assert json.load(open(os.path.join(out, "summary.json")))["stages"][-1]["stage"] == "self_train"
    # each stage's wall time, recorded in its manifest, reaches the summary as it was recorded
    recorded = [json.load(open(os.path.join(out, d, "manifest.json")))["seconds"] for d in STAGE_DIRS]
    assert all(t >= 0 for t in recorded) and [s["seconds"] for s in summary["stages"]] == recorded


def test_killed_in_align_resumes_to_identical_weights(uninterrupted, toy_root, tmp_path, monkeypatch):
    full_out, _ = uninterrupted
    out = str(tmp_path)
    original = AlignTrainer.run_step

    def crash_at_3(self, batch):
        if self.iteration == 3:
            raise Killed("simulated crash in align")
        return original(self, batch)

    monkeypatch.setattr(AlignTrainer, "run_step", crash_at_3)
    with pytest.raises(Killed):
        run_pipeline(tiny_cfg(toy_root, out, *_opts()))
    assert not os.path.exists(os.path.join(out, "3_align", "manifest.json"))
    # the unfinished stage says what it was started after, so a later rerun of an earlier stage sets it aside
    started = json.load(open(os.path.join(out, "3_align", "upstream.json")))["after"]
    assert started == {d: _manifest(os.path.join(out, d))["id"] for d in STAGE_DIRS[:3]}
    assert stage_plan(tiny_cfg(toy_root, out)) == list(zip(STAGE_DIRS, ["finished"] * 3 + ["resumes"] + ["runs"] * 2))
    ckpts = os.path.join(out, "3_align", "checkpoints")
    assert open(os.path.join(ckpts, "last_checkpoint")).read() == "model_0000002.pth"
    warm_mtime = os.path.getmtime(os.path.join(out, "0_adv_warmup", "manifest.json"))

    monkeypatch.setattr(AlignTrainer, "run_step", original)
    run_pipeline(tiny_cfg(toy_root, out, *_opts()))
    # finished stages were skipped, align resumed from iteration 2
    assert os.path.getmtime(os.path.join(out, "0_adv_warmup", "manifest.json")) == warm_mtime
    log = open(os.path.join(out, "3_align", "log.txt")).read()
    assert "resumed from" in log and "model_0000002.pth at iteration 2" in log
    resumed, full = _final_state(out), _final_state(full_out)
    assert resumed.keys() == full.keys()
    for k in full:
        assert torch.equal(resumed[k], full[k]), k
    align_r = torch.load(os.path.join(out, "3_align", "checkpoints", "model_final.pth"), weights_only=False)
    align_f = torch.load(os.path.join(full_out, "3_align", "checkpoints", "model_final.pth"), weights_only=False)
    assert torch.equal(align_r["prototype_bank"]["prototypes"], align_f["prototype_bank"]["prototypes"])
    # one record per iteration, as in the uninterrupted run: iteration 3, logged before the crash and run
    # again after the resume from 2, is not in metrics.json (nor TensorBoard) twice
    def records(run):
        with open(os.path.join(run, "3_align", "metrics.json")) as f:
            return [json.loads(line) for line in f]
    r, f = records(out), records(full_out)
    assert [x["iteration"] for x in r] == [x["iteration"] for x in f]
    assert [x.get("loss_seg") for x in r] == [x.get("loss_seg") for x in f]
    tb_r, tb_f = tb_scalars(os.path.join(out, "3_align", "tb")), tb_scalars(os.path.join(full_out, "3_align", "tb"))
    assert tb_r["align/loss_seg"] == tb_f["align/loss_seg"]


def test_summary_shows_each_training_stage_gain():
    """Each training stage's line carries its gain over the training stage before it (pseudo-label
    stages in between are skipped), and a last line the gain of the last over the first."""
    from spcl.engine.pipeline import format_summary

    rows = [{"stage": "adv_warmup", "mIoU": 30.0}, {"stage": "prototypes"},
            {"stage": "pseudo_labels", "kept_fraction": 0.5},
            {"stage": "align", "mIoU": 31.25}, {"stage": "pseudo_labels", "kept_fraction": 0.6},
            {"stage": "self_train", "mIoU": 34.5}]
    lines = format_summary(rows).splitlines()
    assert lines[0].endswith("target mIoU  30.00")  # the first training stage has nothing to compare with
    assert lines[3].endswith("(+1.25 vs adv_warmup)")
    assert lines[5].endswith("(+3.25 vs align)")
    assert lines[-1] == "self_train vs adv_warmup: +4.50 mIoU"
    assert len(format_summary(rows[:1]).splitlines()) == 1
    # PSEUDO.ORACLE: the labelled share of the files written, marked as ground truth
    oracle = format_summary([{"stage": "pseudo_labels", "kept_fraction": 0.5, "labelled_fraction": 0.941,
                              "oracle": "all", "pseudo_label_mIoU": 100.0}])
    assert oracle == "pseudo_labels  94.1% of target pixels labelled  [ORACLE labels: ground truth on all pixels]"
    # a test set without labels (folder_val without VAL_LABEL_DIR) scores NaN: said in words, no 'nan' gains
    text = format_summary([{"stage": "adv_warmup", "mIoU": float("nan")}, {"stage": "align", "mIoU": float("nan")}])
    assert text.splitlines() == ["adv_warmup     trained (the test set has no labels: no mIoU)",
                                 "align          trained (the test set has no labels: no mIoU)"]
    # the tail-class mIoU beside the mIoU, the quality of the kept pseudo labels, and an oracle hand-off marked
    text = format_summary([{"stage": "align", "mIoU": 31.0, "mIoU_tail": 12.5, "handoff": "best (ORACLE)"},
                           {"stage": "pseudo_labels", "kept_fraction": 0.25, "pseudo_label_mIoU": 61.0}])
    assert text.splitlines() == ["align          target mIoU  31.00  mIoU_tail 12.50  [ORACLE checkpoint choice]",
                                 "pseudo_labels  25.0% of target pixels labelled, mIoU of kept pixels 61.00"]


def test_best_handoff_on_a_test_set_without_labels_is_refused_before_the_run(toy_root, tmp_path):
    from spcl.engine.pipeline import check_run

    opts = ("DATASETS.TEST", "folder_val", "DATASETS.FOLDER.VAL_DIR", toy_root, "PIPELINE.HANDOFF", "best")
    with pytest.raises(ValueError, match="PIPELINE.HANDOFF best picks checkpoints by their mIoU on DATASETS.TEST, "
                                         "and folder_val has no labels"):
        check_run(tiny_cfg(toy_root, str(tmp_path / "run"), *opts), datasets=False)
    check_run(tiny_cfg(toy_root, str(tmp_path / "run"), *opts, "DATASETS.FOLDER.VAL_LABEL_DIR", toy_root),
              datasets=False)


def _manifest(folder):
    return json.load(open(os.path.join(folder, "manifest.json")))


def test_a_deleted_stage_reruns_with_every_stage_after_it(uninterrupted, toy_root, tmp_path):
    """README: delete a stage folder to rerun it and the stages after it. Align is rerun with another
    length (--allow-config-change); the stages after it must follow it, not keep what the old align made:
    the final weights equal those of a fresh run with the new length, and the old folders are kept aside."""
    import shutil

    full_out, _ = uninterrupted
    out = str(tmp_path / "run")
    shutil.copytree(full_out, out)
    ids = {d: _manifest(os.path.join(out, d))["id"] for d in STAGE_DIRS}
    shutil.rmtree(os.path.join(out, "3_align"))
    shorter = ["ALIGN.STOP_ITER", "4", "PIPELINE.ALLOW_CONFIG_CHANGE", "True"]
    assert [what for _, what in stage_plan(tiny_cfg(toy_root, out))] == (  # what --check says a rerun will do
        ["finished"] * 3 + ["runs"] + ["set aside and run again"] * 2)
    run_pipeline(tiny_cfg(toy_root, out, *_opts(), *shorter))
    assert [what for _, what in stage_plan(tiny_cfg(toy_root, out))] == ["finished"] * 6
    fresh = str(tmp_path / "fresh")
    run_pipeline(tiny_cfg(toy_root, fresh, *_opts(), *shorter))

    rerun, new = _final_state(out), _final_state(fresh)
    assert any(not torch.equal(rerun[k], _final_state(full_out)[k]) for k in rerun)  # the old final differs
    for k in new:
        assert torch.equal(rerun[k], new[k]), k
    now = {d: _manifest(os.path.join(out, d))["id"] for d in STAGE_DIRS}
    assert [now[d] == ids[d] for d in STAGE_DIRS] == [True, True, True, False, False, False]
    assert _manifest(os.path.join(out, "5_self_train"))["after"] == {d: now[d] for d in STAGE_DIRS[:5]}
    aside = sorted(f for f in os.listdir(out) if ".stale-" in f)
    assert [f.split(".stale-")[0] for f in aside] == ["4_pseudo_labels", "5_self_train"]
    assert [_manifest(os.path.join(out, f))["id"] for f in aside] == [ids["4_pseudo_labels"], ids["5_self_train"]]


def test_a_run_from_before_stage_ids_resumes_without_rerunning_anything(uninterrupted, toy_root, tmp_path):
    import shutil

    full_out, _ = uninterrupted
    out = str(tmp_path / "run")
    shutil.copytree(full_out, out)
    for d in STAGE_DIRS:
        os.remove(os.path.join(out, d, "upstream.json"))
        manifest = _manifest(os.path.join(out, d))
        del manifest["id"], manifest["after"]
        json.dump(manifest, open(os.path.join(out, d, "manifest.json"), "w"))
    before = {d: open(os.path.join(out, d, "manifest.json")).read() for d in STAGE_DIRS}
    run_pipeline(tiny_cfg(toy_root, out, *_opts()))
    assert {d: open(os.path.join(out, d, "manifest.json")).read() for d in STAGE_DIRS} == before
    assert not [f for f in os.listdir(out) if ".stale-" in f]


def _stage_folder(root, name, manifest=None, upstream=None):
    folder = os.path.join(root, name)
    os.makedirs(os.path.join(folder, "checkpoints"))
    open(os.path.join(folder, "checkpoints", "model_0000002.pth"), "w").write("progress")
    if manifest is not None:
        json.dump({"stage": "x", "status": "done", **manifest}, open(os.path.join(folder, "manifest.json"), "w"))
    if upstream is not None:
        json.dump({"after": upstream}, open(os.path.join(folder, "upstream.json"), "w"))
    return folder


@pytest.mark.parametrize("manifest, upstream, after, stale", [
    ({"id": "c", "after": {"0_a": "a", "1_b": "b"}}, None, {"0_a": "a", "1_b": "b"}, False),  # current
    ({"id": "c", "after": {"0_a": "a", "1_b": "b"}}, None, {"0_a": "a", "1_b": "B"}, True),  # 1_b rerun since
    ({"id": "c", "after": {"0_a": "a"}}, None, {"0_a": "a", "1_b": "b"}, True),  # made before 1_b existed
    (None, {"0_a": "a"}, {"0_a": "a"}, False),  # started, not finished: resumes
    (None, {"0_a": "a"}, {"0_a": "A"}, True),  # started after an earlier version of 0_a
    ({"status": "done"}, None, {}, False),  # a run from before ids: nothing to compare
    (None, None, {}, False),
    ({"status": "done"}, None, {"0_a": "a"}, True),  # no ids, yet an earlier stage has one: rerun since
    (None, None, {"0_a": "a"}, True),
])
def test_a_stage_made_from_other_earlier_outputs_is_set_aside(tmp_path, manifest, upstream, after, stale):
    from spcl.engine.pipeline import set_aside_if_stale

    folder = _stage_folder(str(tmp_path), "2_c", manifest, upstream)
    moved = set_aside_if_stale(folder, after)
    assert (moved is not None) == stale
    kept = moved or folder
    assert open(os.path.join(kept, "checkpoints", "model_0000002.pth")).read() == "progress"  # nothing deleted
    assert os.path.exists(folder) != stale
    assert set_aside_if_stale(str(tmp_path / "absent"), after) is None


def test_setting_aside_twice_within_a_second_keeps_both(tmp_path, monkeypatch):
    import datetime

    from spcl.engine import pipeline

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(pipeline.datetime, "datetime", Frozen)
    root = str(tmp_path)
    first = pipeline.set_aside_if_stale(_stage_folder(root, "2_c", upstream={"0_a": "a"}), {"0_a": "A"})
    second = pipeline.set_aside_if_stale(_stage_folder(root, "2_c", upstream={"0_a": "a"}), {"0_a": "A"})
    third = pipeline.set_aside_if_stale(_stage_folder(root, "2_c", upstream={"0_a": "a"}), {"0_a": "A"})
    assert [os.path.basename(p) for p in (first, second, third)] == [
        "2_c.stale-20260102-030405", "2_c.stale-20260102-030405~2", "2_c.stale-20260102-030405~3"]


def test_a_stage_folder_given_as_output_dir_names_the_runs_folder(tmp_path):
    """Given with a trailing slash too, the refusal names the run's folder (the stage folder's parent)."""
    from spcl.engine.pipeline import refuse_a_stage_folder

    stage = tmp_path / "run" / "2_c"
    stage.mkdir(parents=True)
    (stage / "upstream.json").write_text("{}")
    for given in (str(stage), str(stage) + os.sep):
        with pytest.raises(ValueError, match=rf"^OUTPUT_DIR {given} is a stage folder \(it holds upstream.json\): .*"
                                             rf"give the run's folder \({tmp_path / 'run'}\) to resume that run"):
            refuse_a_stage_folder(given)
    refuse_a_stage_folder(str(tmp_path / "run"))


def _set_aside(root, after, result):
    from spcl.engine.pipeline import set_aside_if_stale
    from spcl.utils import comm

    torch.save(set_aside_if_stale(os.path.join(root, "2_c"), after), result.format(rank=comm.get_rank()))


def test_every_process_agrees_and_the_folder_moves_once(tmp_path):
    from spcl.engine import launch

    root, result = str(tmp_path / "run"), str(tmp_path / "rank{rank}.pt")
    _stage_folder(root, "2_c", upstream={"0_a": "a"})
    launch(_set_aside, num_processes=2, args=(root, {"0_a": "A"}, result), backend="gloo")
    r0, r1 = (torch.load(result.format(rank=r)) for r in (0, 1))
    assert r0 == r1 and os.path.isdir(r0) and not os.path.exists(os.path.join(root, "2_c"))
    assert os.listdir(root) == [os.path.basename(r0)]


def test_every_json_file_of_a_run_is_standard_json(uninterrupted):
    """No bare NaN in any JSON file or JSON line of a run; the tiny test set lacks classes, whose IoU (a
    NaN) the evaluations log to metrics.json and record in the manifests as null."""
    from test_standard_json import strict_load

    out, _ = uninterrupted
    absent_iou = 0
    for folder, _, files in os.walk(out):
        for name in (f for f in files if f.endswith(".json")):
            with open(os.path.join(folder, name)) as f:
                text = f.read()
            for doc in text.splitlines() if name == "metrics.json" else [text]:
                data = strict_load(doc)
                absent_iou += None in data.get("val/IoU", []) or None in data.get("metrics", {}).get("IoU", [])
    assert absent_iou >= 6  # three training stages: their manifests and their final evaluations' lines


def test_a_stage_records_the_wall_time_of_the_run_that_finished_it(tmp_path, monkeypatch):
    """`seconds` in the manifest is the monotonic clock's advance across the stage's run (a wall-clock
    jump would not count); a finished stage is not run or timed again."""
    from spcl.engine import pipeline

    clock = iter([1000.0, 1163.5])
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(pipeline, "run_stage", lambda *a, **k: {"outputs": {}, "metrics": {"mIoU": 1.0}})
    cfg = tiny_cfg(str(tmp_path), str(tmp_path))
    folder = str(tmp_path / "adv_warmup")
    done, ran = pipeline.run_stage_once(cfg, "adv_warmup", folder)
    assert ran and done["seconds"] == 163.5
    assert json.load(open(os.path.join(folder, "manifest.json")))["seconds"] == 163.5
    again, ran = pipeline.run_stage_once(cfg, "adv_warmup", folder)  # the clock has no third reading
    assert not ran and again["seconds"] == 163.5


def test_a_finished_stage_run_again_with_another_config_is_refused(tmp_path, monkeypatch):
    """run_stage_once (tools/train.py --stage, and every stage of the pipeline) compares the config with the one the
    finished stage recorded; PIPELINE.ALLOW_CONFIG_CHANGE lets it hand on the finished outputs."""
    from spcl.config import ConfigDriftError
    from spcl.engine import pipeline
    from spcl.utils.env import write_run_info

    folder = str(tmp_path / "source_only")

    def stage(cfg, name, out, device=None):
        write_run_info(cfg, out)
        return {"outputs": {"checkpoint": os.path.join(out, "model_final.pth")}, "metrics": {"mIoU": 1.0}}

    monkeypatch.setattr(pipeline, "run_stage", stage)
    done, ran = pipeline.run_stage_once(tiny_cfg(str(tmp_path), folder), "source_only", folder)
    assert ran and done["outputs"] == {"checkpoint": "model_final.pth"}  # relative to the stage folder
    with pytest.raises(ConfigDriftError, match=r"SOURCE_ONLY\.BASE_LR"):
        pipeline.run_stage_once(tiny_cfg(str(tmp_path), folder, "SOURCE_ONLY.BASE_LR", "0.5"), "source_only", folder)
    again, ran = pipeline.run_stage_once(tiny_cfg(str(tmp_path), folder, "SOURCE_ONLY.BASE_LR", "0.5",
                                                  "PIPELINE.ALLOW_CONFIG_CHANGE", "True"), "source_only", folder)
    assert not ran and again == done


def test_summary_ends_with_each_stage_wall_time_and_their_sum():
    from spcl.engine.pipeline import duration, format_summary

    rows = [{"stage": "adv_warmup", "mIoU": 30.0, "seconds": 164.4}, {"stage": "prototypes", "seconds": 4.2},
            {"stage": "align", "mIoU": 31.0, "seconds": 3600.0}]
    lines = format_summary(rows).splitlines()
    assert lines[-2] == "align vs adv_warmup: +1.00 mIoU"
    assert lines[-1] == "wall time: adv_warmup 2 min 44 s, prototypes 4 s, align 1 h 00 min (1 h 02 min in all)"
    # a stage finished by a version that did not record its time: left out, and said
    rows[1].pop("seconds")
    assert format_summary(rows).splitlines()[-1] == (
        "wall time: adv_warmup 2 min 44 s, align 1 h 00 min (1 h 02 min in all; 1 stage(s) made by an older "
        "version, untimed)")
    assert "wall time" not in format_summary([{"stage": "align", "mIoU": 31.0}])
    assert [duration(s) for s in (0.4, 45, 59.5, 125, 3599.6, 3725)] == [
        "0 s", "45 s", "1 min 00 s", "2 min 05 s", "1 h 00 min", "1 h 02 min"]


def _fake_stages(monkeypatch, calls):
    """pipeline.run_stage replaced by one that records (stage, MODEL.WEIGHTS, PROTOTYPE.PATH) and hands on a file
    of its folder: source_only its best checkpoint (an oracle choice) with per-class IoU, prototypes its file."""
    from spcl.engine import pipeline

    def fake(cfg, stage, folder, device=None):
        calls.append((stage, cfg.MODEL.WEIGHTS, cfg.PROTOTYPE.PATH))
        if stage == "source_only":
            return {"outputs": {"checkpoint": os.path.join(folder, "checkpoints", "model_best.pth")},
                    "metrics": {"mIoU": 40.0, "IoU": [30.0, 50.0]}, "last_metrics": {"mIoU": 35.0, "IoU": [30.0, 40.0]},
                    "oracle": True, "handoff": "best target-val checkpoint (ORACLE)"}
        return {"outputs": {"prototypes": os.path.join(folder, "prototypes.pth")}, "metrics": {}}

    monkeypatch.setattr(pipeline, "run_stage", fake)
    return pipeline


def test_the_run_hands_on_records_and_summarises_each_stage(tmp_path, monkeypatch):
    """_run_stages with stand-in stages: the next stage's config reads the hand-off as an absolute path, each
    stage folder records the ids it was started after (upstream.json), the summary rows carry the metrics without
    the per-class IoU and the oracle hand-off, and summary.json holds what the run returns; a rerun skips both,
    also for a manifest of an older version without `seconds`."""
    calls = []
    pipeline = _fake_stages(monkeypatch, calls)
    out = str(tmp_path / "run")
    cfg = tiny_cfg(str(tmp_path), out, "PIPELINE.STAGES", "['source_only', 'prototypes']")
    result = pipeline._run_stages(cfg, torch.device("cpu"))
    best = os.path.join(out, "0_source_only", "checkpoints", "model_best.pth")
    assert calls[1] == ("prototypes", best, "")
    first = _manifest(os.path.join(out, "0_source_only"))
    assert json.load(open(os.path.join(out, "0_source_only", "upstream.json"))) == {"after": {}}
    after = {"0_source_only": first["id"]}
    assert json.load(open(os.path.join(out, "1_prototypes", "upstream.json"))) == {"after": after}
    assert _manifest(os.path.join(out, "1_prototypes"))["after"] == {"0_source_only": first["id"]}
    assert _manifest(os.path.join(out, "1_prototypes"))["inputs"] == {
        "checkpoint": os.path.join("0_source_only", "checkpoints", "model_best.pth")}
    rows = result["stages"]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == [
        {"stage": "source_only", "folder": "0_source_only", "mIoU": 40.0,
         "handoff": "best target-val checkpoint (ORACLE)"},
        {"stage": "prototypes", "folder": "1_prototypes"}]
    assert all(r["seconds"] >= 0 for r in rows)
    assert result["outputs"] == {"checkpoint": os.path.join("0_source_only", "checkpoints", "model_best.pth"),
                                 "prototypes": os.path.join("1_prototypes", "prototypes.pth")}
    assert json.load(open(os.path.join(out, "summary.json"))) == result
    # a rerun: nothing runs; a stage finished by a version that did not time it has no `seconds` in its row
    manifest = _manifest(os.path.join(out, "1_prototypes"))
    del manifest["seconds"]
    json.dump(manifest, open(os.path.join(out, "1_prototypes", "manifest.json"), "w"))
    again = pipeline._run_stages(cfg, torch.device("cpu"))
    assert len(calls) == 2 and again["outputs"] == result["outputs"]
    assert "seconds" in again["stages"][0] and "seconds" not in again["stages"][1]


def test_recorded_config_reads_the_newest_record_of_a_folder(tmp_path, monkeypatch):
    """A folder rerun with other safe keys holds several records (config.yaml, config_<time>.yaml): the one
    compared with a new run is the newest by modification time, then by name; other YAML files are no record."""
    from spcl.engine.pipeline import recorded_config

    for name, seed, mtime in (("config.yaml", 1, 1000), ("config_20261203-1200.yaml", 2, 3000),
                              ("config_20261203-1100.yaml", 3, 2000), ("thresholds.yaml", 4, 4000)):
        path = tmp_path / name
        path.write_text(f"SEED: {seed}\n")
        os.utime(path, (mtime, mtime))
    assert recorded_config(str(tmp_path)) == {"SEED": 2}
    os.utime(tmp_path / "config_20261203-1100.yaml", (3000, 3000))  # same time: the later name, in any listing order
    listdir = os.listdir
    for reverse in (False, True):
        monkeypatch.setattr(os, "listdir", lambda d, r=reverse: sorted(listdir(d), reverse=r))
        assert recorded_config(str(tmp_path)) == {"SEED": 2}
    monkeypatch.undo()
    os.utime(tmp_path / "config.yaml", (5000, 5000))
    assert recorded_config(str(tmp_path)) == {"SEED": 1}
    assert recorded_config(str(tmp_path / "missing")) is None


def test_a_finished_stage_after_one_that_resumes_is_set_aside(toy_root, tmp_path):
    """`stage_plan`, by the rule of set_aside_if_stale: a stage that resumes makes new outputs, so a later stage
    that had finished (made from the outputs before) is set aside and run again, even though the ids it
    recorded still match the earlier manifests; the stages after it run."""
    out = tmp_path / "run"
    ckpts = out / STAGE_DIRS[0] / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "model_0000002.pth").write_bytes(b"")  # only its name is read: a resume point
    (out / STAGE_DIRS[0] / "upstream.json").write_text(json.dumps({"after": {}}))
    (out / STAGE_DIRS[1]).mkdir()
    (out / STAGE_DIRS[1] / "manifest.json").write_text(json.dumps({"status": "done", "id": "p1", "after": {}}))
    plan = stage_plan(tiny_cfg(toy_root, str(out)))
    assert plan == list(zip(STAGE_DIRS, ["resumes", "set aside and run again"] + ["runs"] * 4))
