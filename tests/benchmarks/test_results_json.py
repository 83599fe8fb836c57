"""The benchmarks' result files are standard JSON (RFC 8259): a NaN or infinity (a per-class IoU of a class
absent from the test set, a loss statistic of a window without that loss) is written as null, which
JavaScript, Go and Rust parsers accept where they reject Python's bare `NaN`, and read back as NaN."""
from __future__ import annotations

import glob
import json
import math
import os

import pytest
import torch

from benchmarks import common
from benchmarks import self_train_curve as stc


def _strict(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as a standard parser does."""
    def refuse(constant):
        raise ValueError(f"not standard JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_null_for_nan_and_infinities_and_keeps_the_rest(tmp_path):
    path = str(tmp_path / "r.json")
    common.write_json(path, {"IoU": [50.0, float("nan"), 12.5], "peak": float("inf"), "low": -float("inf"),
                             "ms": torch.tensor(2.5), "n": 3, "name": "x", "ok": True}, indent=2)
    text = open(path).read()
    assert text.endswith("}\n") and "\n  \"IoU\"" in text  # the indent asked for
    assert _strict(text) == {"IoU": [50.0, None, 12.5], "peak": None, "low": None, "ms": 2.5, "n": 3,
                             "name": "x", "ok": True}


def test_write_results_goes_through_write_json(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    path = common.write_results("bench", {"loss": float("nan")}, quick=True)
    assert path == str(tmp_path / "bench.quick.json")
    assert _strict(open(path).read()) == {"loss": None}


def test_committed_benchmark_results_are_standard_json():
    results = os.path.join(common.RESULTS_DIR)
    paths = glob.glob(os.path.join(results, "**", "*.json"), recursive=True)
    assert paths, f"no result files under {results}"
    for path in paths:
        try:
            _strict(open(path).read())
        except ValueError as e:
            pytest.fail(f"{os.path.relpath(path, results)}: {e}")


def test_compare_curves_reads_a_null_evaluation_as_nan():
    new = {"curves": {"0": {"100": 47.0, "200": None}, "1": {"200": 46.0}}}
    old = {"curves": {"0": {"200": 45.0}, "1": {"200": 44.0}}}
    _, out = stc.compare_curves(new, old)
    assert math.isnan(out["end"]["per_seed"][0]) and out["end"]["per_seed"][1] == 2.0


def test_benchmark_scripts_write_json_files_only_through_the_standard_writers():
    """Every JSON file a benchmark script writes goes through `common.write_json` (results) or
    `spcl.utils.io.atomic_write_json` (per-seed caches); a plain `json.dump` would write a bare NaN again."""
    import re

    folder = os.path.dirname(common.__file__)
    found = []
    for path in sorted(glob.glob(os.path.join(folder, "*.py"))):
        for number, line in enumerate(open(path), 1):
            if re.search(r"\bjson\.dump\(", line) and "json_safe(" not in line:
                found.append(f"{os.path.basename(path)}:{number}: {line.strip()}")
    assert not found, "json.dump outside the standard writers:\n" + "\n".join(found)
