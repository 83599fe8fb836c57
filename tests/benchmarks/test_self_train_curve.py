"""benchmarks/self_train_curve.py: reading the evaluations out of a stage's metrics.json and the paired
curve table, on hand-made rows (the training itself is the self_train stage, tested elsewhere)."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import self_train_curve as stc


def test_read_curve_takes_evaluation_rows_only_and_the_last_of_a_repeated_iteration(tmp_path):
    rows = [{"iteration": 20, "stage": "self_train", "loss_seg_tgt": 0.3},
            {"iteration": 20, "stage": "self_train", "val/mIoU": 37.5, "val/mAcc": 50.0},
            {"iteration": 40, "stage": "self_train", "loss_seg_tgt": 0.2, "val/mIoU_tail": 9.0},
            {"iteration": 40, "stage": "self_train", "val/mIoU": 41.0},
            {"iteration": 40, "stage": "self_train", "val/mIoU": 42.0}]  # a resumed run evaluated again
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert stc.read_curve(str(path)) == {20: 37.5, 40: 42.0}


def test_null_in_metrics_json_reads_as_nan(tmp_path):
    """metrics.json is standard JSON: a NaN (mIoU of a test set without labels, a loss gone NaN) is null."""
    import math

    from benchmarks import toy_adaptation as ta

    rows = [{"iteration": 20, "stage": "align", "loss_seg_tgt": None, "grad_ratio_src": None},
            {"iteration": 40, "stage": "align", "loss_seg_tgt": 0.5, "grad_ratio_src": 0.25, "val/mIoU": None}]
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert math.isnan(stc.read_curve(str(path))[40]) and stc.last_loss(str(path)) == 0.5
    shares = ta._grad_shares(str(tmp_path))
    assert math.isnan(shares["grad_ratio_src"]) and shares["grad_ratio_src_last"] == 0.25


def test_curve_rows_are_paired_against_each_seeds_align_score():
    start = {0: 45.0, 1: 48.0}
    curves = {0: {20: 37.0, 40: 46.0, 60: 47.0}, 1: {20: 36.0, 40: 49.0}}  # seed 1 lacks iteration 60
    text, out = stc.curve_table(curves, start)
    assert out["iterations"] == [0, 20, 40]  # only iterations every seed evaluated
    assert out["mean"] == pytest.approx([46.5, 36.5, 47.5])
    assert out["vs_align"] == pytest.approx([0.0, -10.0, 1.0])  # mean of (−8, −12) and of (+1, +1)
    assert out["vs_align_std"][1] == pytest.approx(8 ** 0.5)  # sample std of −8, −12
    assert out["lowest"] == {"iteration": 20, "vs_align": pytest.approx(-10.0)}
    assert out["last"] == {"iteration": 40, "vs_align": pytest.approx(1.0)}
    assert "| 0 (align) | 45.0, 48.0 | 46.5 | +0.0 ± 0.0 |" in text
    assert "| 20 | 37.0, 36.0 | 36.5 | -10.0 ± 2.8 |" in text


def test_a_seed_without_its_benchmark_run_is_named_before_anything_starts(tmp_path):
    with pytest.raises(SystemExit, match=r"seed0/spcl/5_self_train/manifest.json is missing: run "
                                         r"benchmarks/toy_adaptation.py"):
        stc._benchmark_manifest(str(tmp_path), 0)
    folder = tmp_path / "seed0" / "spcl" / "5_self_train"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    assert stc._benchmark_manifest(str(tmp_path), 0) == str(folder / "manifest.json")


def _fake_benchmark_seed(root, seed, bench_opts):
    """A benchmark seed folder as toy_adaptation.py leaves it: its cache stamped with the digest of the
    config it ran with (`bench_opts` its --opts) and the self_train manifest naming its inputs."""
    from benchmarks import toy_adaptation as ta

    run_dir = root / f"seed{seed}" / "spcl"
    (run_dir / "5_self_train").mkdir(parents=True)
    (run_dir / "5_self_train" / "manifest.json").write_text(json.dumps(
        {"inputs": {"checkpoint": "3_align/checkpoints/model_final.pth", "pseudo_dir": "4_pseudo_labels/labels"}}))
    key = ta.config_key(ta.cfg_for(str(run_dir), seed, bench_opts))
    (root / f"seed{seed}" / "results.json").write_text(json.dumps({"_config": key, "align": {"mIoU": 45.0}}))
    return run_dir


def test_a_benchmark_run_with_opts_is_followed_only_with_the_same_bench_opts(tmp_path, monkeypatch):
    from benchmarks import toy_adaptation as ta

    monkeypatch.setattr(ta, "CONFIG", os.path.join(ta.ROOT, "configs", "toy_256.yaml"))
    draw = ["DATASETS.TOY.SEED", "1", "DATASETS.DATA_DIR", "datasets/toy_256_draw1"]
    run_dir = _fake_benchmark_seed(tmp_path, 2, draw)
    variant = ["INPUT.SELF_TRAIN_SCALE", "[0.5,1.5]"]
    with pytest.raises(SystemExit, match=r"another config .*--bench-opts must repeat .*given: none"):
        stc.curve_config(2, str(tmp_path), 20, "v", variant, [])
    cfg, folder = stc.curve_config(2, str(tmp_path), 20, "v", variant, draw)
    assert folder == str(tmp_path / "seed2" / "self_train_curve_v")
    assert cfg.DATASETS.TOY.SEED == 1 and cfg.DATASETS.DATA_DIR == "datasets/toy_256_draw1"
    assert list(cfg.INPUT.SELF_TRAIN_SCALE) == [0.5, 1.5] and cfg.SOLVER.EVAL_PERIOD == 20 and cfg.SEED == 2
    assert cfg.MODEL.WEIGHTS == str(run_dir / "3_align/checkpoints/model_final.pth")
    assert cfg.DATASETS.PSEUDO_DIR == str(run_dir / "4_pseudo_labels/labels")
    # the variant's opts come last: they may override what the benchmark ran with
    cfg, _ = stc.curve_config(2, str(tmp_path), 20, "v", ["DATASETS.TOY.SEED", "3"], draw)
    assert cfg.DATASETS.TOY.SEED == 3


def _stamp(path, seed, run_dir, bench_opts, rows):
    """Write a per-seed cache at `path` stamped with the digest of the config run with `bench_opts`."""
    from benchmarks import toy_adaptation as ta

    key = ta.config_key(ta.cfg_for(str(run_dir), seed, bench_opts))
    path.write_text(json.dumps({"_config": key, **rows}))


def test_the_align_score_comes_from_the_benchmark_cache_or_else_from_self_train_start(tmp_path, monkeypatch):
    from benchmarks import toy_adaptation as ta

    monkeypatch.setattr(ta, "CONFIG", os.path.join(ta.ROOT, "configs", "toy_256.yaml"))
    seed_dir = tmp_path / "seed4"
    run_dir = seed_dir / "spcl"
    run_dir.mkdir(parents=True)
    # a seed that self_train_start.py ran: its align start, not its self-trained or λ = 0 numbers
    _stamp(seed_dir / "self_train_start.json", 4, run_dir, [],
           {"align": {"start": 47.75, "self_train": 49.5}, "lambda0": {"start": 46.1}})
    assert stc.align_score(str(tmp_path), 4, []) == pytest.approx(47.75)
    # with the benchmark's own cache beside it, that one is read (its align row, not the λ = 0 one)
    _stamp(seed_dir / "results.json", 4, run_dir, [], {"align": {"mIoU": 48.2}, "align λ=0": {"mIoU": 46.0}})
    assert stc.align_score(str(tmp_path), 4, []) == pytest.approx(48.2)


def test_a_self_train_start_cache_of_another_config_or_without_align_stops_with_its_name(tmp_path, monkeypatch):
    from benchmarks import toy_adaptation as ta

    monkeypatch.setattr(ta, "CONFIG", os.path.join(ta.ROOT, "configs", "toy_256.yaml"))
    draw = ["DATASETS.TOY.SEED", "1", "DATASETS.DATA_DIR", "datasets/toy_256_draw1"]
    seed_dir = tmp_path / "seed3"
    run_dir = seed_dir / "spcl"
    run_dir.mkdir(parents=True)
    _stamp(seed_dir / "self_train_start.json", 3, run_dir, draw, {"align": {"start": 46.0}})
    with pytest.raises(SystemExit, match=r"self_train_start.json holds results of another config.*given: none"):
        stc.align_score(str(tmp_path), 3, [])
    assert stc.align_score(str(tmp_path), 3, draw) == pytest.approx(46.0)
    _stamp(seed_dir / "self_train_start.json", 3, run_dir, draw, {"warmup": {"start": 43.0}})  # --starts warmup
    with pytest.raises(SystemExit, match=r"seed3/self_train_start.json has no align score"):
        stc.align_score(str(tmp_path), 3, draw)
    (seed_dir / "self_train_start.json").unlink()
    with pytest.raises(SystemExit, match=r"seed3/results.json has no align score"):
        stc.align_score(str(tmp_path), 3, draw)


def test_last_loss_is_the_last_training_row_of_the_key(tmp_path):
    rows = [{"iteration": 20, "loss_seg_tgt": 0.30}, {"iteration": 20, "val/mIoU": 40.0},
            {"iteration": 40, "loss_seg_tgt": 0.25}, {"iteration": 40, "val/mIoU": 41.0, "loss_seg": 9.0}]
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert stc.last_loss(str(path)) == pytest.approx(0.25)
    assert stc.last_loss(str(path), "loss_seg") == pytest.approx(9.0)
    assert stc.last_loss(str(path), "loss_adv") is None


def test_compare_pairs_each_seeds_last_evaluation_and_final_loss():
    old = {"curves": {"3": {"100": 45.0, "200": 49.0}, "4": {"100": 47.0, "200": 51.0}},
           "final_loss": {"3": 0.050, "4": 0.040}}
    new = {"curves": {"3": {"200": 44.0, "400": 49.5}, "4": {"200": 52.0, "400": 49.0}, "5": {"400": 60.0}},
           "final_loss": {"3": 0.045, "4": 0.020, "5": 0.01}}
    text, out = stc.compare_curves(new, old)
    assert out["seeds"] == [3, 4]                                 # seed 5 has no partner
    assert out["end"]["per_seed"] == pytest.approx([0.5, -2.0])   # 49.5 − 49.0 (not 44.0 − 45.0), 49.0 − 51.0
    assert out["end"]["mean"] == pytest.approx(-0.75)
    assert out["end"]["std"] == pytest.approx(2.5 / 2 ** 0.5)
    assert out["final_loss"]["per_seed"] == pytest.approx([-0.005, -0.020])
    assert "| target-val mIoU at the end | -0.75 ± 1.77 | +0.50, -2.00 |" in text
    del old["final_loss"]                                          # a file written before the loss was recorded
    assert "final_loss" not in stc.compare_curves(new, old)[1]


def test_collect_rebuilds_the_tables_from_finished_runs_and_keeps_the_recorded_time(tmp_path, monkeypatch):
    import sys

    from benchmarks import toy_adaptation as ta

    config = os.path.join(ta.ROOT, "configs", "toy_256.yaml")
    monkeypatch.setattr(ta, "CONFIG", config)
    _fake_benchmark_seed(tmp_path, 1, [])                          # align 45.0 in its cache
    folder = tmp_path / "seed1" / "self_train_curve_v"
    folder.mkdir()
    (folder / "metrics.json").write_text("\n".join(json.dumps(r) for r in [
        {"iteration": 100, "loss_seg_tgt": 0.07}, {"iteration": 100, "val/mIoU": 44.0},
        {"iteration": 200, "loss_seg_tgt": 0.05}, {"iteration": 200, "val/mIoU": 47.5}]) + "\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "self_train_curve_v.json").write_text(json.dumps({"minutes": 12.5, "command": "the original"}))
    monkeypatch.setattr(ta, "run_seed_processes", lambda seeds, *a: pytest.fail("--collect trained") if seeds else None)
    monkeypatch.setattr(sys, "argv", ["self_train_curve.py", "--config", config, "--seeds", "1", "--name", "v",
                                      "--output", str(tmp_path), "--results", str(results), "--collect"])
    stc.main()
    out = json.load(open(results / "self_train_curve_v.json"))
    assert out["minutes"] == 12.5 and out["command"] == "the original"
    assert out["final_loss"] == {"1": pytest.approx(0.05)}
    assert out["summary"]["last"] == {"iteration": 200, "vs_align": pytest.approx(2.5)}
    md = open(results / "self_train_curve_v.md").read()
    assert "`the original`: 12.5 min wall as recorded; tables rebuilt with --collect." in md
    assert "0.0500; mean 0.0500." in md
