"""The whole pipeline on the tiny dataset: every stage's outputs, skip of finished stages, and a run
killed in the middle of `align` that, resumed, ends with exactly the weights of an uninterrupted run."""
import json
import os

import pytest
import torch

from conftest import tiny_cfg
from spcl.engine import run_pipeline
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
