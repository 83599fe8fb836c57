"""benchmarks/self_train_start.py: which checkpoint and pseudo labels each self-training start is handed,
and the paired table, on hand-made rows (the stages themselves are tested in tests/engine)."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import self_train_start as sts
from benchmarks import toy_adaptation as ta

FOLDERS = ["0_adv_warmup", "1_prototypes", "2_pseudo_labels", "3_align", "4_pseudo_labels", "5_self_train"]
PIPELINE = {  # stage folder → (outputs, metrics) as the pipeline's manifests hold them
    "0_adv_warmup": ({"checkpoint": "0_adv_warmup/checkpoints/model_final.pth"}, {"mIoU": 40.0}),
    "2_pseudo_labels": ({"pseudo_dir": "2_pseudo_labels/labels"},
                        {"kept_fraction": 0.80, "pseudo_label_mIoU": 55.0}),
    "3_align": ({"checkpoint": "3_align/checkpoints/model_final.pth"}, {"mIoU": 46.0}),
    "4_pseudo_labels": ({"pseudo_dir": "4_pseudo_labels/labels"},
                        {"kept_fraction": 0.84, "pseudo_label_mIoU": 59.0}),
    "5_self_train": ({"checkpoint": "5_self_train/checkpoints/model_final.pth"}, {"mIoU": 47.5}),
}
ALIGN_INPUTS = {"checkpoint": "0_adv_warmup/checkpoints/model_final.pth", "prototypes": "1_prototypes/prototypes.pth",
                "pseudo_dir": "2_pseudo_labels/labels"}
STAGE_RESULT = {  # what the fake run_stage_once returns per stage run outside the pipeline
    "align": ({"checkpoint": "checkpoints/model_final.pth"}, {"mIoU": 45.0}),
    "pseudo_labels": ({"pseudo_dir": "labels"}, {"kept_fraction": 0.83, "pseudo_label_mIoU": 58.0}),
}
SELF_TRAIN = {"self_train_from_lambda0": 47.5, "self_train_from_warmup": 42.5}


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    """run_seed with the pipeline and the stages replaced by records of the configs they were given."""
    import make_toy
    from spcl.engine import pipeline

    monkeypatch.setattr(ta, "CONFIG", os.path.join(ta.ROOT, "configs", "toy_256.yaml"))
    monkeypatch.setattr(make_toy, "prepare_toy_data", lambda cfg: None)
    manifests = {}

    def run_pipeline(cfg):
        for folder in FOLDERS:
            outputs, metrics = PIPELINE.get(folder, ({}, {}))
            manifest = {"outputs": outputs, "metrics": metrics, "inputs": ALIGN_INPUTS if folder == "3_align" else {}}
            manifests[os.path.join(cfg.OUTPUT_DIR, folder)] = manifest
            os.makedirs(os.path.join(cfg.OUTPUT_DIR, folder), exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, folder, "manifest.json"), "w") as f:
                json.dump(manifest, f)
        return {"stages": [{"stage": f[2:], "folder": f} for f in FOLDERS]}

    calls = []

    def run_stage_once(cfg, stage, folder, **kw):
        calls.append((stage, os.path.basename(folder), cfg))
        if stage == "self_train":
            return {"outputs": {}, "metrics": {"mIoU": SELF_TRAIN[os.path.basename(folder)]}}, True
        outputs, metrics = STAGE_RESULT[stage]
        return {"outputs": outputs, "metrics": metrics}, True

    monkeypatch.setattr(pipeline, "run_pipeline", run_pipeline)
    monkeypatch.setattr(pipeline, "run_stage_once", run_stage_once)
    monkeypatch.setattr(pipeline, "read_manifest", lambda folder: manifests.get(folder))
    return tmp_path, calls


def test_each_start_is_self_trained_from_its_own_checkpoint_and_its_own_pseudo_labels(fake_runs):
    root, calls = fake_runs
    res = sts.run_seed(1, str(root), [], list(sts.STARTS))
    run = root / "seed1" / "spcl"
    by = {(stage, folder): cfg for stage, folder, cfg in calls}
    assert [(s, f) for s, f, _ in calls] == [("align", "align_lambda=0"), ("pseudo_labels", "pseudo_labels_from_lambda0"),
                                             ("self_train", "self_train_from_lambda0"),
                                             ("self_train", "self_train_from_warmup")]
    al = by["align", "align_lambda=0"]  # align's own inputs, without the contrastive term
    assert al.LOSS.CONTRAST.WEIGHT == 0.0 and al.SEED == 1
    assert al.MODEL.WEIGHTS == str(run / "0_adv_warmup/checkpoints/model_final.pth")
    assert al.PROTOTYPE.PATH == str(run / "1_prototypes/prototypes.pth")
    assert al.DATASETS.PSEUDO_DIR == str(run / "2_pseudo_labels/labels")
    lam0 = str(root / "seed1" / "align_lambda=0" / "checkpoints/model_final.pth")
    assert by["pseudo_labels", "pseudo_labels_from_lambda0"].MODEL.WEIGHTS == lam0
    st = by["self_train", "self_train_from_lambda0"]
    assert st.MODEL.WEIGHTS == lam0 and st.LOSS.CONTRAST.WEIGHT == 1.0
    assert st.DATASETS.PSEUDO_DIR == str(root / "seed1" / "pseudo_labels_from_lambda0" / "labels")
    st = by["self_train", "self_train_from_warmup"]
    assert st.MODEL.WEIGHTS == str(run / "0_adv_warmup/checkpoints/model_final.pth")
    assert st.DATASETS.PSEUDO_DIR == str(run / "2_pseudo_labels/labels")
    assert res["lambda0"] == {"start": 45.0, "kept_fraction": 0.83, "pseudo_label_mIoU": 58.0, "self_train": 47.5,
                              "gain": pytest.approx(2.5)}
    assert res["warmup"] == {"start": 40.0, "kept_fraction": 0.80, "pseudo_label_mIoU": 55.0, "self_train": 42.5,
                             "gain": pytest.approx(2.5)}
    assert res["align"] == {"start": 46.0, "kept_fraction": 0.84, "pseudo_label_mIoU": 59.0, "self_train": 47.5,
                            "gain": pytest.approx(1.5)}
    cached = json.load(open(root / "seed1" / "self_train_start.json"))
    assert cached["lambda0"]["self_train"] == 47.5
    calls.clear()  # a second call reads every start back from the cache and runs nothing outside the pipeline
    assert sts.run_seed(1, str(root), [], list(sts.STARTS))["warmup"]["gain"] == pytest.approx(2.5)
    assert calls == []


def test_only_the_named_starts_run(fake_runs):
    root, calls = fake_runs
    res = sts.run_seed(0, str(root), [], ["align"])
    assert calls == [] and set(res) == {"_config", "align"}


def _row(start, st, kept=0.8, pl=50.0):
    return {"start": start, "kept_fraction": kept, "pseudo_label_mIoU": pl, "self_train": st, "gain": st - start}


def test_table_pairs_every_gain_per_seed_and_against_the_gain_from_align():
    results = {0: {"lambda0": _row(44.0, 47.0), "align": _row(46.0, 47.0, kept=0.84, pl=60.0)},
               1: {"lambda0": _row(48.0, 50.0), "align": _row(49.0, 51.0, kept=0.82, pl=58.0)},
               2: {"align": _row(45.0, 46.0)}}  # seed 2 lacks λ = 0: left out of every row
    text, out = sts.start_table(results, ["lambda0", "align"])
    assert out["seeds"] == [0, 1]
    assert out["lambda0"]["gain"]["mean"] == pytest.approx(2.5)  # (+3, +2)
    assert out["lambda0"]["gain"]["std"] == pytest.approx(0.5 ** 0.5)
    assert out["align"]["gain"]["per_seed"] == pytest.approx([1.0, 2.0])
    assert out["align"]["kept_fraction"]["mean"] == pytest.approx(0.83)
    d = out["gain from align, λ = 0 − gain from align"]
    assert d["per_seed"] == pytest.approx([2.0, 0.0]) and d["mean"] == pytest.approx(1.0)
    e = out["final from align − final from align, λ = 0"]
    assert e["per_seed"] == pytest.approx([0.0, 1.0])
    assert "| align, λ = 0 | 46.0 ± 2.8 | 80.0 %, 50.0 | 48.5 ± 2.1 | +2.5 ± 0.7 | +3.0, +2.0 |" in text
    assert "| align (SPCL) | 47.5 ± 2.1 | 83.0 %, 59.0 | 49.0 ± 2.8 | +1.5 ± 0.7 | +1.0, +2.0 |" in text
    assert out["gain_vs_start"]["slope"] == pytest.approx(-0.8)  # dx (−1, 1, −0.5, 0.5), dy (1, −1, 0, 0)
    assert out["gain_vs_start"]["r"] == pytest.approx(-2 / 5 ** 0.5)
    assert "4 (seed, start) pairs): slope -0.80 points per point, r = -0.89." in text


def test_within_seed_fit_takes_each_seeds_own_means_out():
    x = [[1.0, 2.0, 3.0], [10.0, 12.0, 14.0]]
    y = [[3.0, 2.0, 1.0], [105.0, 104.0, 103.0]]  # seed 1 is 100 higher everywhere: a pooled fit would slope up
    slope, r = sts.within_seed_fit(x, y)
    assert slope == pytest.approx(-6 / 10)  # sxy = −1 − 1 − 2 − 2, sxx = 1 + 1 + 4 + 4
    assert r == pytest.approx(-6 / (10 * 4) ** 0.5)
    assert sts.within_seed_fit(y, x)[1] == pytest.approx(r)  # r is symmetric
    flat = sts.within_seed_fit(x, [[5.0, 5.0, 5.0], [7.0, 7.0, 7.0]])  # y constant within each seed
    assert all(v != v for v in flat)  # NaN, not a division error


@pytest.mark.parametrize("diffs, expected", [
    ([0.6, 0.5, 1.0], "overlap"),   # every seed at least 0.5
    ([2.0, 2.0, 0.4], "neither"),   # mean 1.47 but one seed under 0.5
    ([1.2, 0.1, -0.1], "room"),     # the first draw's seeds: mean 0.4
    ([0.49, 0.49, 0.49], "room"),
    ([-0.6, -0.5, -0.7], "neither"),  # align gains clearly more: not room either
])
def test_reading_follows_the_rule_fixed_before_the_run(diffs, expected):
    assert sts.reading(diffs) == expected


def test_table_states_the_reading_of_its_own_seeds():
    results = {0: {"lambda0": _row(44.0, 47.0), "align": _row(46.0, 47.0)},     # λ = 0 gain 3, align gain 1
               1: {"lambda0": _row(48.0, 50.5), "align": _row(49.0, 50.0)}}    # 2.5 against 1
    text, out = sts.start_table(results, ["lambda0", "align"])
    assert out["reading"] == "overlap" and "**overlap** (+1.75 ± 0.35 over 2, standard error 0.25, 95 % t-interval -1.43 to +4.93)." in text
    # the interval: 1.75 ± t(1 df) 12.706 × 0.25
    results[1]["lambda0"] = _row(48.0, 49.0)  # now 1 against 1: mean (2 + 0) / 2 = 1, one seed under 0.5
    assert sts.start_table(results, ["lambda0", "align"])[1]["reading"] == "neither"


def test_pool_keeps_equal_seeds_of_two_draws_apart_and_pairs_each_within_its_run(tmp_path):
    paths = []
    for draw, (l0, al) in enumerate([((44.0, 47.0), (46.0, 47.0)), ((40.0, 41.0), (42.0, 44.0))]):
        folder = tmp_path / f"toy_256_cpu_draw{draw}"
        folder.mkdir()
        path = folder / "self_train_start.json"
        path.write_text(json.dumps({"results": {"0": {"lambda0": _row(*l0), "align": _row(*al)}}}))
        paths.append(str(path))
    pooled = ta.pooled_results(paths)
    assert sorted(pooled) == ["toy_256_cpu_draw0:0", "toy_256_cpu_draw1:0"]
    text, out = sts.start_table(pooled, ["lambda0", "align"])
    d = out["gain from align, λ = 0 − gain from align"]
    assert d["per_seed"] == pytest.approx([3.0 - 1.0, 1.0 - 2.0])  # never a λ = 0 of one draw against align of the other
    assert out["reading"] == "neither"  # mean (2 − 1) / 2 = 0.5: not within 0.5, and one pair under 0.5


def test_label_anchor_fits_within_seed_and_offsets_per_start():
    # seed 0: labels rise 0.5 per point of start, self-training ends 10 below its labels from both starts;
    # seed 1 is 20 higher in labels and ends 12 below them: its own means are taken out of both fits
    results = {0: {"lambda0": _row(40.0, 45.0, pl=55.0), "align": _row(44.0, 47.0, pl=57.0)},
               1: {"lambda0": _row(42.0, 63.0, pl=75.0), "align": _row(46.0, 65.0, pl=77.0)}}
    text, out = sts.start_table(results, ["lambda0", "align"])
    assert out["labels_vs_start"]["slope"] == pytest.approx(0.5)
    assert out["labels_vs_start"]["r"] == pytest.approx(1.0)
    assert out["final_vs_labels"]["slope"] == pytest.approx(1.0)
    off = out["final_minus_labels"]
    assert off["lambda0"]["mean"] == pytest.approx(-11.0) and off["align"]["mean"] == pytest.approx(-11.0)
    assert off["lambda0"]["std"] == pytest.approx(2 ** 0.5)
    assert off["spread_of_means"] == pytest.approx(0.0)
    assert "rises +0.50 per point of start mIoU (r = +1.00)" in text
    assert "from align, λ = 0 -11.0 ± 1.4, from align (SPCL) -11.0 ± 1.4 (means 0.0 apart)." in text
    results[1]["align"] = _row(46.0, 64.0, pl=78.0)  # labels up 3 for 4 points of start; ends 14 below
    out = sts.start_table(results, ["lambda0", "align"])[1]
    assert out["labels_vs_start"]["slope"] == pytest.approx(10 / 16)  # dx (−2, 2, −2, 2), dy (−1, 1, −1.5, 1.5)
    assert out["final_minus_labels"]["align"]["mean"] == pytest.approx((-10.0 - 14.0) / 2)
    assert out["final_minus_labels"]["spread_of_means"] == pytest.approx(1.0)


def test_label_opts_give_every_start_its_own_labels_and_leave_the_pipeline_and_lambda0_alone(fake_runs, monkeypatch):
    """--label-opts PSEUDO.THRESHOLD_CAP 1.0: warm-up and align write new pseudo labels from their own
    checkpoints with the override and self-train on them; align λ = 0 is the same run as without; the
    folders and the cache carry the override's name, so the run without it is not overwritten."""
    root, calls = fake_runs
    tag = "_PSEUDO.THRESHOLD_CAP=1.0"
    assert sts.label_tag(["PSEUDO.THRESHOLD_CAP", "1.0"]) == tag and sts.label_tag([]) == ""
    for name, miou in (("warmup", 43.0), ("lambda0", 48.0), ("align", 49.0)):
        monkeypatch.setitem(SELF_TRAIN, f"self_train_from_{name}{tag}", miou)
    res = sts.run_seed(2, str(root), [], list(sts.STARTS), ["PSEUDO.THRESHOLD_CAP", "1.0"])
    run = root / "seed2" / "spcl"
    by = {(stage, folder): cfg for stage, folder, cfg in calls}
    assert sorted(by) == sorted([("align", "align_lambda=0")] + [(stage, f"{stage}_from_{name}{tag}") for name in sts.STARTS
                                                                 for stage in ("pseudo_labels", "self_train")])
    assert by["align", "align_lambda=0"].PSEUDO.THRESHOLD_CAP == 0.9  # the λ = 0 run is not changed
    ckpts = {"warmup": str(run / "0_adv_warmup/checkpoints/model_final.pth"),
             "align": str(run / "3_align/checkpoints/model_final.pth"),
             "lambda0": str(root / "seed2" / "align_lambda=0" / "checkpoints/model_final.pth")}
    for name, ckpt in ckpts.items():
        pl, st = by["pseudo_labels", f"pseudo_labels_from_{name}{tag}"], by["self_train", f"self_train_from_{name}{tag}"]
        assert pl.MODEL.WEIGHTS == ckpt and pl.PSEUDO.THRESHOLD_CAP == 1.0
        assert st.MODEL.WEIGHTS == ckpt and st.PSEUDO.THRESHOLD_CAP == 1.0
        assert st.DATASETS.PSEUDO_DIR == str(root / "seed2" / f"pseudo_labels_from_{name}{tag}" / "labels")
    # every start's labels are the new ones (STAGE_RESULT), not the pipeline's rounds (0.80 / 0.84)
    assert res["align"] == {"start": 46.0, "kept_fraction": 0.83, "pseudo_label_mIoU": 58.0, "self_train": 49.0,
                            "gain": pytest.approx(3.0)}
    assert res["warmup"]["kept_fraction"] == 0.83 and res["warmup"]["gain"] == pytest.approx(3.0)
    assert os.path.isfile(root / "seed2" / f"self_train_start{tag}.json")
    assert not os.path.exists(root / "seed2" / "self_train_start.json")


def test_compare_pairs_two_runs_of_the_same_seeds_per_start(tmp_path, capsys, monkeypatch):
    """--compare NEW OLD: NEW − OLD per start and quantity, paired per seed (kept share in points); a
    seed in only one run is left out; each run's own within-seed slope of labels on start."""
    old = {"3": {"warmup": _row(40.0, 42.0, kept=0.80, pl=55.0), "align": _row(46.0, 48.0, kept=0.84, pl=59.0)},
           "4": {"warmup": _row(42.0, 45.0, kept=0.78, pl=57.0), "align": _row(47.0, 49.0, kept=0.82, pl=60.0)}}
    new = {"3": {"warmup": _row(40.0, 43.0, kept=0.50, pl=65.0), "align": _row(46.0, 50.0, kept=0.55, pl=71.0)},
           "4": {"warmup": _row(42.0, 44.0, kept=0.52, pl=66.0), "align": _row(47.0, 49.5, kept=0.54, pl=70.0)},
           "5": {"warmup": _row(1.0, 2.0), "align": _row(1.0, 2.0)}}
    text, out = sts.compare_runs(new, old, ["warmup", "align"])
    assert out["seeds"] == ["3", "4"]
    assert out["warmup: kept_fraction"]["per_seed"] == pytest.approx([-30.0, -26.0])
    assert out["align: pseudo_label_mIoU"]["per_seed"] == pytest.approx([12.0, 10.0])
    assert out["align: self_train"]["mean"] == pytest.approx((2.0 + 0.5) / 2)
    assert out["warmup: gain"]["per_seed"] == pytest.approx([1.0, -1.0])
    # within seed, labels on start: old rises 4 and 3 over starts 6 and 5 apart → 19.5 / 30.5; new 6 and 4 → 28 / 30.5
    assert out["labels_vs_start old"]["slope"] == pytest.approx((6 * 4 / 2 + 5 * 3 / 2) / (36 / 2 + 25 / 2))
    assert out["labels_vs_start new"]["slope"] == pytest.approx((6 * 6 / 2 + 5 * 4 / 2) / (36 / 2 + 25 / 2))
    paths = []
    for name, res in (("new", new), ("old", old)):
        paths.append(str(tmp_path / f"{name}.json"))
        with open(paths[-1], "w") as f:
            json.dump({"results": res}, f)
    monkeypatch.setattr("sys.argv", ["self_train_start.py", "--compare", *paths, "--starts", "warmup", "align"])
    sts.main()
    assert "| warm-up | kept share, points | -28.00 ± 2.83 | -30.00, -26.00 |" in capsys.readouterr().out
