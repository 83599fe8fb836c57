"""What a run reports: TensorBoard tags named by class, the prototypes stage's statistics, the run's
top-level log.txt, the readable summary of tools/gen_pseudo.py, and tools/prepare_data.py leaving
a run folder alone."""
import importlib.util
import json
import logging
import math
import os
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tb_scalars, tiny_cfg
from spcl.data.labels import CLASSES_16, CLASSES_19
from spcl.engine.events import EventWriter, scalar_tags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def restore_logger():
    """setup_logger changes the `spcl` logger: put its handlers back afterwards."""
    logger = logging.getLogger("spcl")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield logger
    for h in list(logger.handlers):
        if h not in saved[0]:
            logger.removeHandler(h)
            h.close()
    for h in saved[0]:
        if h not in logger.handlers:
            logger.addHandler(h)
    logger.propagate, logger.level = saved[1], saved[2]


# --------------------------------------------------------------------------- TensorBoard tags
def test_per_class_scalars_are_tagged_with_class_names(tmp_path):
    pytest.importorskip("tensorboard")
    ev = EventWriter(str(tmp_path), "align")
    iou = [float(k) for k in range(19)]
    ev.write(7, {"mIoU": 9.0, "IoU": iou}, prefix="val/")
    ev.close()
    tags = tb_scalars(str(tmp_path / "tb"))
    assert tags["align/val/IoU/sign"] == [7.0]  # class 7 of 19
    assert tags["align/val/IoU/road"] == [0.0] and tags["align/val/IoU/bicycle"] == [18.0]
    assert tags["align/val/mIoU"] == [9.0]
    assert not any(t.split("/")[-1].isdigit() for t in tags)  # no `val/IoU/07` any more
    # metrics.json keeps the list as it was
    record = json.loads(open(tmp_path / "metrics.json").read())
    assert record["val/IoU"] == iou and record["iteration"] == 7


def test_pseudo_label_thresholds_and_kept_shares_by_name_16_classes(tmp_path):
    pytest.importorskip("tensorboard")
    ev = EventWriter(str(tmp_path), "pseudo_labels")
    ev.write(0, {"thresholds": [0.5] * 16, "kept_fraction_per_class": [0.25] * 16, "kept_fraction": 0.3})
    ev.close()
    tags = tb_scalars(str(tmp_path / "tb"))
    for name in CLASSES_16:
        assert tags[f"pseudo_labels/thresholds/{name}"] == [0.5]
        assert tags[f"pseudo_labels/kept_fraction_per_class/{name}"] == [0.25]
    assert "pseudo_labels/thresholds/terrain" not in tags  # not a SYNTHIA class: the 16 names, not the 19


def test_explicit_names_and_index_fallback():
    assert scalar_tags("IoU", [1, 2, 3], ["a", "b c", "d/e"]) == ["IoU/a", "IoU/b_c", "IoU/d_e"]
    assert scalar_tags("IoU", [1, 2, 3]) == ["IoU/00", "IoU/01", "IoU/02"]  # no names for 3 entries
    assert scalar_tags("IoU", [0] * 19) == [f"IoU/{n}" for n in CLASSES_19]
    assert scalar_tags("x", [0] * 19, ["a"] * 4) == [f"x/{n}" for n in CLASSES_19]  # names of another length


@pytest.fixture
def fake_tensorboard(monkeypatch):
    """TensorBoard's SummaryWriter replaced by a recorder: `calls` gets (tag, value, step) per scalar and "flush" /
    "close" in order, `purge_steps` the purge_step of each writer opened."""
    calls, purge_steps = [], []

    class FakeWriter:
        def __init__(self, *args, **kwargs):
            purge_steps.append(kwargs.get("purge_step"))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            calls.append("flush")

        def close(self):
            calls.append("close")

    import torch.utils.tensorboard as tb

    monkeypatch.setattr(tb, "SummaryWriter", FakeWriter)
    return SimpleNamespace(calls=calls, purge_steps=purge_steps)


def test_mocked_summary_writer_gets_named_tags(tmp_path, fake_tensorboard):
    ev = EventWriter(str(tmp_path), "self_train", class_names=["sky", "car"])
    ev.write(3, {"IoU": [10.0, 20.0]}, prefix="val/")
    assert fake_tensorboard.calls == [("self_train/val/IoU/sky", 10.0, 3), ("self_train/val/IoU/car", 20.0, 3)]


def test_each_number_goes_to_tensorboard_at_its_iteration_and_the_writer_is_closed(tmp_path, fake_tensorboard):
    """EventWriter.write (spcl/engine/events.py): every int or float scalar, and each entry of a list of numbers,
    goes to TensorBoard at the iteration it was logged at (the x axis of every curve); a list holding anything
    else is kept in metrics.json only. close() flushes and closes the writer, so that its thread and event file
    end with the stage (a pipeline opens one writer per stage)."""
    calls = fake_tensorboard.calls
    ev = EventWriter(str(tmp_path), "align")
    ev.write(5, {"loss_seg": 0.5, "num_pixels": 12, "names": ["road", 1.0], "IoU": [1.0, 2]})
    assert calls == [("align/loss_seg", 0.5, 5), ("align/num_pixels", 12, 5), ("align/IoU/00", 1.0, 5),
                     ("align/IoU/01", 2, 5)]
    ev.close()
    assert calls[-1] == "close"
    record = json.loads(open(tmp_path / "metrics.json").read())
    assert record == {"iteration": 5, "stage": "align", "loss_seg": 0.5, "num_pixels": 12, "names": ["road", 1.0],
                      "IoU": [1.0, 2]}


def test_a_resumed_writer_keeps_the_records_up_to_the_checkpoint_and_skips_only_the_redone_evaluation(
        tmp_path, fake_tensorboard):
    """EventWriter(resumed_at, redo_eval) (spcl/engine/events.py, class doc): metrics.json keeps the records up to
    the checkpoint's iteration and drops those after it (and a line cut short by a kill); with redo_eval the
    evaluation of that iteration is dropped too and, as TensorBoard still has it, not sent there again; TensorBoard
    hides the steps after the checkpoint (purge_step). Any other scalar of that iteration still goes to TensorBoard."""
    calls, purge = fake_tensorboard.calls, fake_tensorboard.purge_steps
    earlier = [{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 0.5}, {"iteration": 2, "val/mIoU": 7.0},
               {"iteration": 3, "loss": 0.25}]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in earlier) + '{"iterat')
    ev = EventWriter(str(tmp_path), "align", resumed_at=2, redo_eval=True)
    assert purge == [3]
    assert [json.loads(ln) for ln in open(tmp_path / "metrics.json")] == earlier[:2]
    ev.write(2, {"mIoU": 8.0}, prefix="val/")
    ev.write(2, {"loss_extra": 0.75})
    ev.write(3, {"loss": 0.3})
    assert calls == [("align/loss_extra", 0.75, 2), ("align/loss", 0.3, 3)]
    rows = [json.loads(ln) for ln in open(tmp_path / "metrics.json")]
    assert [(r["iteration"], r.get("val/mIoU")) for r in rows] == [(1, None), (2, None), (2, 8.0), (2, None), (3, None)]


def test_names_that_do_not_fit_the_list_give_index_tags():
    """Class names tag a list only when there is exactly one name per entry and no two alike (module doc of
    spcl.engine.events): with 3 names for a 2-entry list, or a name given twice, curves would be named after
    other classes or two curves would share one tag; such lists get index tags."""
    assert scalar_tags("IoU", [1, 2], ["a", "b", "c"]) == ["IoU/00", "IoU/01"]
    assert scalar_tags("IoU", [1, 2], ["a", "a"]) == ["IoU/00", "IoU/01"]
    assert scalar_tags("IoU", [1, 2], ["a", "b"]) == ["IoU/a", "IoU/b"]
    # distinct names that are one tag once made tag-safe ('/' and spaces become '_') would share one curve
    assert scalar_tags("IoU", [1, 2], ["a b", "a/b"]) == ["IoU/00", "IoU/01"]
    assert scalar_tags("IoU", [1, 2], ["traffic light", "sign"]) == ["IoU/traffic_light", "IoU/sign"]


# --------------------------------------------------------------------------- prototypes stage
def test_prototype_stats_values():
    from spcl.engine.stages.prototypes import prototype_stats

    protos = torch.zeros(4, 3)
    protos[0] = torch.tensor([0.6, 0.0, 0.0])
    protos[1] = torch.tensor([0.0, 0.8, 0.0])
    protos[3] = torch.tensor([0.0, 0.0, 1.0])
    stats = prototype_stats(protos, torch.tensor([10.0, 40.0, 0.0, 7.0]))
    assert stats["classes_seen"] == 3
    assert stats["pixels_per_class"] == [10, 40, 0, 7]
    assert stats["pixels_per_class_min"] == 7  # over the seen classes: the absent one is not a 0
    assert stats["pixels_per_class_median"] == 10.0
    assert stats["mean_prototype_norm"] == pytest.approx((0.6 + 0.8 + 1.0) / 3)
    assert "images_per_class_min" in prototype_stats(protos, torch.ones(4), "image_mean")


@pytest.fixture(scope="module")
def untrained_checkpoint(toy_root, tmp_path_factory):
    from spcl.modeling import build_segmentor

    folder = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_cfg(toy_root, str(folder))
    torch.manual_seed(0)
    path = folder / "model.pth"
    torch.save({"model": build_segmentor(cfg, load_weights=False).state_dict(), "iteration": 0}, path)
    return str(path)


def test_prototypes_stage_logs_its_statistics(toy_root, untrained_checkpoint, tmp_path, restore_logger):
    pytest.importorskip("tensorboard")
    from spcl.engine import run_stage

    out = str(tmp_path / "protos")
    cfg = tiny_cfg(toy_root, out, "MODEL.WEIGHTS", untrained_checkpoint)
    result = run_stage(cfg, "prototypes", out)
    saved = torch.load(result["outputs"]["prototypes"], map_location="cpu", weights_only=False)
    counts = saved["counts"]
    seen = counts > 0
    m = result["metrics"]
    assert m["classes_seen"] == int(seen.sum()) > 1
    assert m["pixels_per_class_min"] == int(counts[seen].min()) > 0
    assert m["pixels_per_class_min"] <= m["pixels_per_class_median"] <= int(counts.max())
    norm = saved["prototypes"][seen].norm(dim=1).mean().item()
    assert m["mean_prototype_norm"] == pytest.approx(norm, rel=1e-5) and 0 < norm <= 1 + 1e-5
    record = [json.loads(ln) for ln in open(os.path.join(out, "metrics.json"))][-1]
    assert record["stage"] == "prototypes" and record["classes_seen"] == m["classes_seen"]
    assert record["pixels_per_class"] == [int(c) for c in counts.tolist()]
    tags = tb_scalars(os.path.join(out, "tb"))
    assert tags["prototypes/mean_prototype_norm"] == [pytest.approx(norm, rel=1e-5)]
    assert tags["prototypes/pixels_per_class/road"] == [float(counts[0])]
    log = open(os.path.join(out, "log.txt")).read()
    assert f"{m['classes_seen']}/19 classes seen" in log and "mean prototype norm" in log


# --------------------------------------------------------------------------- log files
def test_run_log_collects_the_stage_logs_and_files_open_lazily(tmp_path, restore_logger):
    from spcl.utils.logger import setup_logger

    root = tmp_path / "run"
    setup_logger(str(root))
    assert not root.exists()  # nothing logged yet: no empty log.txt, not even the folder
    logger = setup_logger(str(root), run_log=True)
    logger.info("=== stage 1")
    setup_logger(str(root / "0_stage"))  # a stage folder inside the run: its own file, the run log stays
    logger.info("inside the stage")
    setup_logger(str(root), run_log=True)
    logger.info("summary")
    setup_logger(str(tmp_path / "elsewhere"))  # outside the run: the run log ends
    logger.info("another tool")
    run = open(root / "log.txt").read()
    stage = open(root / "0_stage" / "log.txt").read()
    assert "=== stage 1" in run and "inside the stage" in run and "summary" in run
    assert "another tool" not in run and run.count("inside the stage") == 1
    assert "inside the stage" in stage and "=== stage 1" not in stage and "summary" not in stage
    assert "another tool" in open(tmp_path / "elsewhere" / "log.txt").read()


def test_a_message_logged_under_a_live_progress_bar_gets_a_line_of_its_own(restore_logger):
    """infer.py warns of an unreadable image inside its loop: the console line must start with the message,
    not continue the bar's line (the bar is cleared, the message written, the bar drawn again)."""
    import io

    from tqdm import tqdm

    from spcl.utils.logger import _ConsoleHandler, setup_logger

    assert [type(h) for h in setup_logger().handlers] == [_ConsoleHandler]  # the console of every tool
    screen = io.StringIO()
    handler = _ConsoleHandler(screen)
    handler.setFormatter(logging.Formatter("[spcl WARNING] %(message)s"))
    log = logging.getLogger("spcl.test_console")
    log.propagate = False
    log.addHandler(handler)
    try:
        with tqdm(total=3, desc="infer", file=screen) as bar:
            bar.update(1)
            log.warning("skipping broken.png: not a readable image")
            bar.update(1)
    finally:
        log.removeHandler(handler)
    pieces = re.split(r"[\r\n]", screen.getvalue())
    assert "[spcl WARNING] skipping broken.png: not a readable image" in pieces
    assert any(p.startswith("infer:  67%") for p in pieces)  # the bar goes on after it


def test_pipeline_top_level_log_is_the_run_log(toy_root, tmp_path, restore_logger):
    from spcl.engine import run_pipeline

    out = str(tmp_path / "run")
    run_pipeline(tiny_cfg(toy_root, out, "PIPELINE.STAGES", "['source_only', 'pseudo_labels']"))
    log = open(os.path.join(out, "log.txt")).read()
    assert "=== stage 1/2: source_only" in log and "=== stage 2/2: pseudo_labels" in log
    assert "[source_only] iter 3/3" in log and "target val at iteration 3" in log  # the stage's own lines
    assert "pipeline finished" in log
    assert not os.path.exists(os.path.join(out, "pipeline_log.txt"))
    stage_log = open(os.path.join(out, "0_source_only", "log.txt")).read()
    assert "[source_only] iter 3/3" in stage_log and "pipeline finished" not in stage_log
    assert "=== stage 2/2" not in stage_log  # the next stage's banner is not the end of this stage's log
    assert "[source_only]" not in open(os.path.join(out, "1_pseudo_labels", "log.txt")).read()


def _load_tool(name):
    if os.path.join(ROOT, "tools") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "tools"))
    spec = importlib.util.spec_from_file_location(f"spcl_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_leaves_the_run_folder_alone(toy_root, tmp_path, restore_logger):
    run = tmp_path / "run"
    index = tmp_path / "index" / "gta5_index.json"
    _load_tool("prepare_data").main(["--config", os.path.join(ROOT, "configs", "toy.yaml"), "--output", str(index),
                                     "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False",
                                     "OUTPUT_DIR", str(run)])
    assert index.is_file()
    assert not (run / "log.txt").exists() and not run.exists()


# --------------------------------------------------------------------------- gen_pseudo output
def _gen_pseudo(toy_root, checkpoint, out, *flags):
    return _load_tool("gen_pseudo").main(["--config", os.path.join(ROOT, "configs", "toy.yaml"),
                                          "--checkpoint", checkpoint, "--output", out, *flags,
                                          *tiny_cfg_overrides(toy_root)])


def tiny_cfg_overrides(toy_root):
    return ["DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False", "INPUT.TEST_SIZE", "[64,32]",
            "INPUT.SOURCE_SIZE", "[64,32]"]


def test_gen_pseudo_prints_a_readable_summary(toy_root, untrained_checkpoint, tmp_path, capsys, restore_logger):
    out = str(tmp_path / "pseudo")
    assert _gen_pseudo(toy_root, untrained_checkpoint, out) == 0
    text = capsys.readouterr().out
    summary = json.load(open(os.path.join(out, "labels", "thresholds.json")))
    assert f"8 label PNGs in {os.path.join(out, 'labels')}" in text
    assert os.path.join(out, "labels", "thresholds.json") in text
    assert f"kept: {100 * summary['kept_fraction']:.1f}% of the target pixels" in text
    assert "{'pseudo_dir'" not in text  # not the raw dict
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.strip() and ln.split()[0] in CLASSES_19}
    assert set(rows) == set(CLASSES_19)
    assert float(rows["sign"][1]) == pytest.approx(summary["thresholds"][7], abs=1e-3)
    if "quality_on_kept_pixels" in summary:  # the toy target set has ground truth
        assert f"mIoU {summary['quality_on_kept_pixels']['mIoU']:.2f}" in text
        conf = np.array(summary["confusion_on_kept_pixels"], dtype=np.int64)
        for k, name in enumerate(CLASSES_19):  # the most frequent wrong label of the class's kept pixels
            wrong = conf[k].copy()
            wrong[k] = 0
            if wrong.sum() > 0:
                j = int(np.argmax(wrong))
                assert rows[name][-2:] == [CLASSES_19[j], f"{100 * wrong[j] / conf[k].sum():.1f}%"], name
            else:
                assert len(rows[name]) == 4, name  # class, threshold, kept, IoU kept: nothing more
    else:
        assert "quality: not measured" in text


def test_the_pseudo_label_summary_reads_thresholds_json(tmp_path):
    """format_pseudo_labels on a hand-written thresholds.json: the class names it records (3 classes: no Cityscapes
    set), the threshold cap, and "-" for a share or an IoU that is undefined (NaN)."""
    labels = tmp_path / "labels"
    labels.mkdir()
    nan = float("nan")
    (labels / "thresholds.json").write_text(json.dumps({
        "thresholds": [0.9, 0.5, 0.25], "class_names": ["road", "sky", "cat"], "num_images": 2, "cap": 0.9,
        "kept_fraction": 0.25, "kept_fraction_per_class": [0.5, nan, 0.125],
        "quality_on_kept_pixels": {"mIoU": 0.5, "aAcc": 0.75, "IoU": [1.0, nan, 0.0]}}))
    text = _load_tool("gen_pseudo").format_pseudo_labels({"outputs": {"pseudo_dir": str(labels)}})
    assert f"pseudo labels: 2 label PNGs in {labels}" in text
    assert "kept: 25.0% of the target pixels (255 = ignored below the class threshold; threshold cap 0.9)" in text
    assert "mIoU 0.50, pixel accuracy 0.75" in text
    rows = [ln.split() for ln in text.splitlines() if ln.split() and ln.split()[0] in ("road", "sky", "cat")]
    assert rows == [["road", "0.900", "50.0%", "1.00"], ["sky", "0.500", "-", "-"], ["cat", "0.250", "12.5%", "0.00"]]


def test_gen_pseudo_into_a_folder_in_use_writes_nothing(toy_root, untrained_checkpoint, tmp_path, restore_logger):
    """Two label runs into one folder would mix their label files: the second stops, naming the first."""
    from spcl.utils.run_lock import LOCK, RunInUse, run_lock

    out = str(tmp_path / "pseudo")
    with run_lock(out):
        with pytest.raises(RunInUse, match=f"--output {re.escape(out)} is in use by another run \\(pid "):
            _gen_pseudo(toy_root, untrained_checkpoint, out)
        assert os.listdir(out) == [LOCK]


def test_gen_pseudo_says_when_its_files_hold_ground_truth(toy_root, untrained_checkpoint, tmp_path, capsys,
                                                          restore_logger):
    out = str(tmp_path / "oracle")
    assert _gen_pseudo(toy_root, untrained_checkpoint, out, "PSEUDO.ORACLE", "all") == 0
    text = capsys.readouterr().out
    summary = json.load(open(os.path.join(out, "labels", "thresholds.json")))
    labelled = np.mean([np.array(Image.open(os.path.join(out, "labels", n))) != 255
                        for n in sorted(os.listdir(os.path.join(out, "labels"))) if n.endswith(".png")])
    assert summary["labelled_fraction"] == pytest.approx(labelled) and summary["oracle"] == "all"
    assert (f"ORACLE (PSEUDO.ORACLE all): the files hold the ground truth, {100 * labelled:.1f}% of their pixels "
            "labelled") in text


@pytest.mark.parametrize("record", ["manifest.json", "upstream.json"])
def test_gen_pseudo_into_a_pipeline_stage_folder_is_refused(toy_root, untrained_checkpoint, tmp_path, restore_logger,
                                                            record):
    """A pipeline stage folder (finished, or started) holds the labels its later stages were made from:
    the tool refuses it and leaves it as it was; its own output folder it may write again."""
    stage = tmp_path / "run" / "2_pseudo_labels"
    (stage / "labels").mkdir(parents=True)
    (stage / record).write_text("{}")
    (stage / "labels" / "a.png").write_bytes(b"the run's label")
    with pytest.raises(ValueError, match=f"--output {re.escape(str(stage))} is a stage folder of a pipeline run "
                                         f"\\(it holds {record}\\)"):
        _gen_pseudo(toy_root, untrained_checkpoint, str(stage))
    assert sorted(os.listdir(stage)) == sorted(["labels", record])
    assert os.listdir(stage / "labels") == ["a.png"] and (stage / "labels" / "a.png").read_bytes() == b"the run's label"
    out = str(tmp_path / "pseudo")
    assert _gen_pseudo(toy_root, untrained_checkpoint, out) == 0
    assert _gen_pseudo(toy_root, untrained_checkpoint, out) == 0


def test_gen_pseudo_prototypes_summary(toy_root, untrained_checkpoint, tmp_path, capsys, restore_logger):
    out = str(tmp_path / "protos")
    assert _gen_pseudo(toy_root, untrained_checkpoint, out, "--prototypes") == 0
    text = capsys.readouterr().out
    counts = torch.load(os.path.join(out, "prototypes.pth"), weights_only=False)["counts"]
    assert f"prototypes: {os.path.join(out, 'prototypes.pth')}" in text
    assert f"classes seen: {int((counts > 0).sum())} of 19" in text
    assert f"pixels per seen class: min {int(counts[counts > 0].min())}" in text
    absent = [CLASSES_19[k] for k in range(19) if counts[k] == 0]
    if absent:
        assert "never seen (zero prototype): " + ", ".join(absent) in text
    assert "mean prototype norm" in text and not math.isnan(float(text.split("mean prototype norm: ")[1].split()[0]))


def test_metrics_are_on_disk_before_each_checkpoint_and_at_the_stage_end(toy_root, tmp_path, monkeypatch):
    """metrics.json is fsynced (the real call, on that file) with every record up to a checkpoint written before
    the checkpoint is saved, and with every record at the stage's end; a resume after a machine crash then
    finds no gap before the iteration it resumes from."""
    from spcl.engine import run_stage
    from spcl.engine.checkpoint import Checkpointer

    out = tmp_path / "stage"
    metrics = out / "metrics.json"
    seen = []

    def lines():
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    real_fsync, real_save = os.fsync, Checkpointer.save

    def fsync(fd):
        if metrics.exists() and os.fstat(fd).st_ino == os.stat(metrics).st_ino:
            seen.append(("sync", lines()))
        return real_fsync(fd)

    def save(self, name, *args, **kwargs):
        seen.append((name, lines()))
        return real_save(self, name, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Checkpointer, "save", save)
    cfg = tiny_cfg(toy_root, str(out), "SOURCE_ONLY.STOP_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "2")
    run_stage(cfg, "source_only", str(out))
    periodic = [i for i, (what, _) in enumerate(seen) if what.startswith("model_0")]
    assert [seen[i][0] for i in periodic] == ["model_0000002", "model_0000004"]
    for i in periodic:  # the event just before each periodic save is a sync holding every record so far
        assert seen[i - 1] == ("sync", seen[i][1]) and seen[i][1] > 0
    assert seen[-1] == ("sync", lines()) and lines() > seen[periodic[-1]][1]  # the end: val/ records too
