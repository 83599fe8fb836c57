"""benchmarks/toy_adaptation.py: the fair source-only budget, the paired per-seed comparisons and the
target checks of its tables, on hand-made per-seed results (the training runs themselves are the
pipeline code, tested elsewhere)."""
from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import toy_adaptation as ta
from spcl.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _res(**methods):
    return {m: {"mIoU": v} for m, v in methods.items()}


def test_source_only_sees_as_many_source_images_as_warmup_and_align():
    cfg = load_config(os.path.join(REPO, "configs", "toy.yaml"),
                      ["ADV_WARMUP.STOP_ITER", "7", "ADV_WARMUP.SOURCE_BATCH", "3", "ALIGN.STOP_ITER", "5",
                       "ALIGN.SOURCE_BATCH", "2", "SOURCE_ONLY.SOURCE_BATCH", "4"])
    assert ta.source_only_iterations(cfg) == math.ceil((7 * 3 + 5 * 2) / 4) == 8
    toy = load_config(os.path.join(REPO, "configs", "toy.yaml"))
    assert ta.source_only_iterations(toy) == (450 * 2 + 225 * 2) // 2  # the shipped schedule: 675


def test_contributions_are_paired_per_seed_with_sample_std():
    results = {0: _res(source_only=30.0, adv_warmup=31.0, self_train=36.0, align=34.0),
               1: _res(source_only=40.0, adv_warmup=39.0, self_train=41.0, align=40.5)}
    results[0]["align λ=0"] = {"mIoU": 33.0}
    results[1]["align λ=0"] = {"mIoU": 40.0}
    _, agg = ta.contribution_table(results)
    warm = agg["adv_warmup"]["vs"]
    assert warm["method"] == "source_only" and warm["per_seed"] == [1.0, -1.0]
    assert warm["mean"] == pytest.approx(0.0) and warm["std"] == pytest.approx(2 ** 0.5)  # n - 1
    st = agg["self_train"]["vs"]
    assert st["method"] == "align" and st["per_seed"] == pytest.approx([2.0, 0.5])
    assert agg["align"]["vs"]["per_seed"] == pytest.approx([1.0, 0.5])  # against λ = 0, not warm-up
    # with every seed present the paired mean is the difference of the means (its std is not)
    assert agg["self_train"]["mean"] - agg["align"]["mean"] == pytest.approx(st["mean"])
    assert math.isnan(agg["oracle"]["mean"]) and agg["oracle"]["per_seed"] == [None, None]


def test_targets_are_checked_on_paired_means():
    results = {s: _res(source_only=30.0 + s, align=33.5 + s, self_train=38.0 + s + 0.2 * s, oracle=50.0,
                       source_domain=61.0) for s in (0, 1)}
    _, met = ta.targets_table(results)
    assert met["align − source-only ≥ 3"]["per_seed"] == pytest.approx([3.5, 3.5])
    assert met["align − source-only ≥ 3"]["met"]
    assert met["self-train − source-only ≥ 8"]["per_seed"] == pytest.approx([8.0, 8.2])
    assert met["self-train − source-only ≥ 8"]["met"]
    assert met["self-train − align ≥ 2"]["mean"] == pytest.approx(4.6)
    assert met["oracle − source-only ≥ 15"]["per_seed"] == pytest.approx([20.0, 19.0])
    assert met["source domain ≥ 60"]["met"] and met["oracle ≥ 50"]["met"]
    results[1]["oracle"]["mIoU"] = 49.0
    _, met = ta.targets_table(results)
    assert not met["oracle ≥ 50"]["met"]  # mean 49.5


def test_another_config_gets_folders_of_its_own():
    out, res = ta.default_folders(os.path.join(REPO, "configs", "toy.yaml"), None, None)
    out2, res2 = ta.default_folders(os.path.join(REPO, "configs", "toy_256.yaml"), None, None)
    assert out != out2 and res != res2 and res2 == os.path.join(res, "toy_256")
    assert ta.default_folders("configs/toy_256.yaml", "a", "b") == ("a", "b")


def test_a_cache_of_another_config_is_refused_not_mixed_in(tmp_path):
    toy = os.path.join(REPO, "configs", "toy.yaml")
    key = ta.config_key(load_config(toy, ["OUTPUT_DIR", "a"]))
    assert key == ta.config_key(load_config(toy, ["OUTPUT_DIR", "b"]))  # the folder is not the config
    other = ta.config_key(load_config(toy, ["OUTPUT_DIR", "a", "LOSS.CONTRAST.TEMPERATURE", "100.0"]))
    assert other != key
    path = str(tmp_path / "results.json")
    assert ta.load_cache(path, key) == {"_config": key}  # nothing cached yet
    with open(path, "w") as f:
        json.dump({"_config": key, "align": {"mIoU": 40.0}}, f)
    assert ta.load_cache(path, key)["align"] == {"mIoU": 40.0}
    with pytest.raises(SystemExit, match="results.json holds results of another config"):
        ta.load_cache(path, other)
    with open(path, "w") as f:  # written before caches were stamped: taken, and stamped
        json.dump({"align": {"mIoU": 40.0}}, f)
    assert ta.load_cache(path, other)["_config"] == other


def test_adapted_stages_are_paired_against_the_adabn_control():
    """The control table subtracts source-only + target BN statistics (AdaBN) per seed; it is left out
    when no seed has that row (caches from before it existed)."""
    results = {0: _res(source_only=30.0, source_only_adabn=35.0, adv_warmup=33.0, align=36.0, self_train=38.0),
               1: _res(source_only=31.0, source_only_adabn=37.0, adv_warmup=36.0, align=36.5, self_train=37.5)}
    _, ctl = ta.control_table(results)
    assert ctl["adv_warmup"]["per_seed"] == pytest.approx([-2.0, -1.0])
    assert ctl["align"]["per_seed"] == pytest.approx([1.0, -0.5])
    assert ctl["self_train"]["per_seed"] == pytest.approx([3.0, 0.5])
    assert ctl["self_train"]["std"] == pytest.approx(2.5 / 2 ** 0.5)
    _, agg = ta.contribution_table(results)
    assert agg["source_only_adabn"]["vs"]["per_seed"] == pytest.approx([5.0, 6.0])
    for r in results.values():
        del r["source_only_adabn"]
    assert ta.control_table(results) == ("", {})


def test_seed_processes_log_apart_run_one_thread_each_and_a_failure_names_its_log(tmp_path):
    import sys

    def command(seed):
        code = (f"import os, sys; print('seed {seed}', os.environ['OMP_NUM_THREADS']); "
                f"sys.exit(3 if {seed} == 7 else 0)")
        return [sys.executable, "-c", code]

    def log(seed):
        return str(tmp_path / "logs" / f"seed{seed}.log")

    ta.run_seed_processes([0, 1, 2], command, log, jobs=2, poll=0.05)
    for seed in (0, 1, 2):
        assert open(log(seed)).read() == f"seed {seed} 1\n"
    with pytest.raises(SystemExit, match=f"seed 7 failed: see {log(7)}"):
        ta.run_seed_processes([7], command, log, jobs=1, poll=0.05)
    ta.run_seed_processes([0], command, log, jobs=1, poll=0.05)
    assert open(log(0)).read() == "seed 0 1\nseed 0 1\n"  # a rerun appends to the seed's log


def test_pooled_runs_keep_each_seed_paired_within_its_own_run(tmp_path, capsys, monkeypatch):
    """--pool: the seeds of several result files side by side, labelled by folder (seed 0 of two runs
    stays two entries), each difference taken within its own run; n, mean ± sample std, std / √n."""
    runs = {"cpu": {"0": _res(align=40.0, self_train=41.0), "1": _res(align=45.0, self_train=47.0)},
            "gpu": {"0": _res(align=50.0, self_train=50.5), "1": _res(align=30.0, self_train=32.5)}}
    paths = []
    for name, results in runs.items():
        (tmp_path / name).mkdir()
        paths.append(str(tmp_path / name / "toy_adaptation.json"))
        with open(paths[-1], "w") as f:
            json.dump({"results": results}, f)
    pooled = ta.pooled_results(paths)
    assert sorted(pooled) == ["cpu:0", "cpu:1", "gpu:0", "gpu:1"]
    _, out = ta.pooled_table(pooled)
    st = out["self_train - align"]
    diffs = [1.0, 2.0, 0.5, 2.5]
    mean = sum(diffs) / 4
    std = (sum((d - mean) ** 2 for d in diffs) / 3) ** 0.5
    assert st["n"] == 4 and st["mean"] == pytest.approx(mean) and st["std"] == pytest.approx(std)
    assert st["se"] == pytest.approx(std / 2) and (st["min"], st["max"]) == (0.5, 2.5)
    assert "adv_warmup - source_only" not in out  # no run has these rows
    # two files in folders of the same name: full paths label them, no seed overwrites another
    (tmp_path / "b" / "cpu").mkdir(parents=True)
    other = str(tmp_path / "b" / "cpu" / "toy_adaptation.json")
    with open(other, "w") as f:
        json.dump({"results": runs["gpu"]}, f)
    assert len(ta.pooled_results([paths[0], other])) == 4
    monkeypatch.setattr("sys.argv", ["toy_adaptation.py", "--pool", *paths])
    ta.main()
    # 95 % interval: 1.5 ± t(3 df) 3.182 × 0.456
    assert "| self_train − align | 4 | +1.50 ± 0.91 | 0.46 | +0.05 to +2.95 | +0.50 | +2.50 |" in capsys.readouterr().out


def _start_row(start, self_train):
    return {"start": start, "self_train": self_train, "gain": self_train - start, "kept_fraction": 0.8,
            "pseudo_label_mIoU": 55.0}


def test_pool_reads_a_self_train_start_run_as_its_stages(tmp_path, capsys, monkeypatch):
    """A self_train_start.json seed enters --pool as warm-up, align λ = 0 and align at their own mIoU, and
    self-train as the self-training from align (not from warm-up or λ = 0), paired within its run."""
    bench = tmp_path / "toy_256_cpu"
    starts = tmp_path / "toy_256_cpu_seeds345"
    bench.mkdir()
    starts.mkdir()
    (bench / "toy_adaptation.json").write_text(json.dumps({"results": {
        "0": _res(source_only=30.0, adv_warmup=40.0, align=46.0, self_train=47.0)}}))
    seed = {"_config": "abc", "warmup": _start_row(41.0, 45.0), "lambda0": _start_row(44.0, 49.0),
            "align": _start_row(45.0, 48.0)}
    (starts / "self_train_start.json").write_text(json.dumps({"starts": ["warmup", "lambda0", "align"],
                                                              "results": {"3": seed}}))
    assert ta.as_stage_results(seed) == _res(adv_warmup=41.0, **{"align λ=0": 44.0}, align=45.0, self_train=48.0)
    plain = _res(align=1.0, self_train=2.0)
    assert ta.as_stage_results(plain) is plain
    paths = [str(bench / "toy_adaptation.json"), str(starts / "self_train_start.json")]
    monkeypatch.setattr("sys.argv", ["toy_adaptation.py", "--pool", *paths])
    ta.main()
    out = capsys.readouterr().out
    assert "| self_train − align | 2 | +2.00 ± 1.41 | 1.00 | -10.71 to +14.71 | +1.00 | +3.00 |" in out  # 47 − 46, 48 − 45
    assert "| align − align λ=0 | 1 | +1.00 ± 0.00 | 0.00 | – | +1.00 | +1.00 |" in out  # no interval from one
    assert "| adv_warmup − source_only | 1 |" in out  # only the benchmark run has source-only


def test_pool_refuses_two_files_of_one_run(tmp_path):
    """toy_adaptation.json and self_train_start.json in one results folder hold the same seeds' runs:
    pooling both would count them twice."""
    (tmp_path / "toy_adaptation.json").write_text(json.dumps({"results": {"0": _res(align=1.0, self_train=2.0)}}))
    (tmp_path / "self_train_start.json").write_text(json.dumps({"results": {"0": {"align": _start_row(1.0, 2.0)}}}))
    a, b = str(tmp_path / "toy_adaptation.json"), str(tmp_path / "self_train_start.json")
    with pytest.raises(SystemExit, match="one results folder"):
        ta.pooled_results([a, b])


@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (5, 2.571), (8, 2.306), (16, 2.120), (30, 2.042)])
def test_t_quantile_matches_the_published_table(df, table):
    """Two-sided 95 % critical values of Student's t (any statistics table) to three decimals."""
    assert ta.t_quantile(df) == pytest.approx(table, abs=6e-4)


def test_interval95_is_mean_plus_minus_t_times_standard_error():
    vals = [1.0, 2.0, 0.5, 2.5]
    sd = (sum((v - 1.5) ** 2 for v in vals) / 3) ** 0.5
    lo, hi = ta.interval95(vals)
    assert (lo + hi) / 2 == pytest.approx(1.5) and (hi - lo) / 2 == pytest.approx(ta.t_quantile(3) * sd / 2)
    assert ta.t_quantile(3) == pytest.approx(3.182, abs=6e-4)
    assert all(math.isnan(x) for x in ta.interval95([1.0]))
