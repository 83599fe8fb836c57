"""Every JSON file a run writes is standard JSON (RFC 8259 has no NaN or Infinity, which JavaScript, Go and
Rust readers reject): a NaN (the IoU of a class absent from the test set, the mIoU of a test set without
labels) is written as null, and the manifests read back turn it into NaN again."""
import json
import math

import numpy as np
import pytest
import torch

from spcl.engine.pipeline import MANIFEST, format_summary, read_manifest
from spcl.utils.io import atomic_write_json, json_roundtrip, json_safe


def strict_load(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as a standard JSON reader does."""
    def refuse(constant):
        raise ValueError(f"not standard JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinities_become_null_at_any_depth_and_of_any_array_type():
    obj = {"a": float("nan"), "b": [1.5, float("inf"), -float("inf")], "c": (np.float32("nan"), np.int64(3)),
           "d": torch.tensor([0.25, float("nan")]), "e": np.array([[1.0, np.nan]]),
           "f": {"g": None, "h": True, "i": "x", "j": 2}}
    assert json_safe(obj) == {"a": None, "b": [1.5, None, None], "c": [None, 3], "d": [0.25, None],
                              "e": [[1.0, None]], "f": {"g": None, "h": True, "i": "x", "j": 2}}
    assert json_roundtrip({"k": (1, float("nan"))}) == {"k": [1, None]}  # a key compares as it reads back
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        json_safe(object())


def test_written_files_parse_as_standard_json(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json({"IoU": [50.0, float("nan")], "mIoU": float("nan")}, str(path))
    assert strict_load(path.read_text()) == {"IoU": [50.0, None], "mIoU": None}


def test_written_files_list_their_keys_sorted_one_per_line_and_end_with_a_newline(tmp_path):
    """Two runs' records diff line by line whatever order their dicts were built in."""
    path = tmp_path / "m.json"
    atomic_write_json({"b": {"d": 1, "c": 2}, "a": 3}, str(path))
    assert path.read_text() == '{\n  "a": 3,\n  "b": {\n    "c": 2,\n    "d": 1\n  }\n}\n'


def test_a_stage_that_scored_nan_reads_back_as_nan(tmp_path):
    """A rerun of a finished pipeline reads each stage's metrics from its manifest: nulls are NaN there, so
    the summary of a test set without labels says so instead of failing on None."""
    atomic_write_json({"status": "done", "stage": "align", "outputs": {},
                       "metrics": {"mIoU": float("nan"), "aAcc": 80.0, "IoU": [40.0, float("nan")]}},
                      str(tmp_path / MANIFEST))
    metrics = read_manifest(str(tmp_path))["metrics"]
    assert math.isnan(metrics["mIoU"]) and metrics["aAcc"] == 80.0
    assert metrics["IoU"][0] == 40.0 and math.isnan(metrics["IoU"][1])
    summary = format_summary([{"stage": "align", **metrics}])
    assert summary == "align          trained (the test set has no labels: no mIoU)"


def test_the_last_evaluation_beside_a_best_hand_off_reads_back_as_nan_too(tmp_path):
    """PIPELINE.HANDOFF best records the last evaluation (`last_metrics`) beside the handed-on one: its nulls
    are NaN as well; a manifest whose status is not "done" is no finished stage."""
    atomic_write_json({"status": "done", "stage": "align", "outputs": {}, "metrics": {"mIoU": 30.0},
                       "last_metrics": {"mIoU": float("nan"), "IoU": [float("nan"), 20.0]}}, str(tmp_path / MANIFEST))
    last = read_manifest(str(tmp_path))["last_metrics"]
    assert math.isnan(last["mIoU"]) and math.isnan(last["IoU"][0]) and last["IoU"][1] == 20.0
    atomic_write_json({"status": "running", "stage": "align", "outputs": {}, "metrics": {}}, str(tmp_path / MANIFEST))
    assert read_manifest(str(tmp_path)) is None
