"""spcl.config.drift: a rerun's config against the one its run folder recorded (config.yaml, the YAML that
`cfg.dump()` writes): values written as tuples on the command line, and paths inside and outside a run folder
that was moved or copied."""
from __future__ import annotations

import os

import pytest
import yaml

from spcl.config import ConfigDriftError, check_drift, config_drift, load_config
from spcl.config.drift import ABSENT, format_drift

ID_MAP = "[(7,0),(8,1),(11,2)]"


def _recorded(*opts) -> dict:
    """What a run records in its config.yaml, read back as a rerun reads it."""
    return yaml.safe_load(load_config("", list(opts)).dump())


def test_nested_tuples_from_the_command_line_equal_the_lists_recorded():
    """`DATASETS.FOLDER.ID_MAP "[(7,0),(8,1),(11,2)]"`: the run records [[7, 0], …]; the same command again
    holds tuples inside the list, and used to be refused as a change of that key."""
    current = load_config("", ["DATASETS.FOLDER.ID_MAP", ID_MAP])
    assert current.DATASETS.FOLDER.ID_MAP == [(7, 0), (8, 1), (11, 2)]  # what the rerun compares
    recorded = _recorded("DATASETS.FOLDER.ID_MAP", ID_MAP)
    assert recorded["DATASETS"]["FOLDER"]["ID_MAP"] == [[7, 0], [8, 1], [11, 2]]
    assert config_drift(recorded, current) == []
    assert check_drift(recorded, current, "the run") == []


def test_a_changed_pair_inside_a_nested_list_is_still_a_change():
    current = load_config("", ["DATASETS.FOLDER.ID_MAP", "[(7,0),(8,1),(11,3)]"])
    drift = config_drift(_recorded("DATASETS.FOLDER.ID_MAP", ID_MAP), current)
    assert [k for k, _, _ in drift] == ["DATASETS.FOLDER.ID_MAP"]


def _run(output_dir: str, weights: str = "", *opts):
    return load_config("", ["OUTPUT_DIR", output_dir, "MODEL.WEIGHTS", weights, *opts])


def test_a_run_folder_moved_deeper_with_the_same_outside_weights_is_the_same_run(tmp_path):
    """MODEL.WEIGHTS /…/init.pth, outside the run: the run folder copied to another depth and rerun with the
    same command used to be refused with "'/…/init.pth' then, '/…/init.pth' now"."""
    init = str(tmp_path / "init.pth")
    recorded = _recorded("OUTPUT_DIR", str(tmp_path / "r5run"), "MODEL.WEIGHTS", init)
    for moved in (tmp_path / "r5moved" / "a" / "b" / "run", tmp_path / "r5copy", tmp_path):
        assert config_drift(recorded, _run(str(moved), init)) == [], moved
    # the same outside file spelled otherwise is the same file
    spelled = str(tmp_path / "x" / ".." / "init.pth")
    assert config_drift(recorded, _run(str(tmp_path / "r5moved" / "a" / "b" / "run"), spelled)) == []


def test_a_relative_outside_path_given_alike_is_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recorded = _recorded("OUTPUT_DIR", "out/run", "MODEL.WEIGHTS", "weights/init.pth")
    assert config_drift(recorded, _run("elsewhere/deeper/run", "weights/init.pth")) == []
    assert config_drift(recorded, _run("elsewhere/deeper/run", str(tmp_path / "weights" / "init.pth"))) == []


@pytest.mark.parametrize("key", ["MODEL.WEIGHTS", "PROTOTYPE.PATH", "DATASETS.PSEUDO_DIR"])
def test_a_path_inside_the_run_folder_follows_the_copy(tmp_path, key):
    """A hand-off path (the pipeline sets it under OUTPUT_DIR) of a copied run names the copy's own file."""
    inner = os.path.join("1_align", "checkpoints", "model_final.pth")
    old_root, new_root = str(tmp_path / "run"), str(tmp_path / "moved" / "a" / "b" / "run")
    recorded = _recorded("OUTPUT_DIR", old_root, key, os.path.join(old_root, inner))
    current = load_config("", ["OUTPUT_DIR", new_root, key, os.path.join(new_root, inner)])
    assert config_drift(recorded, current) == []
    other = load_config("", ["OUTPUT_DIR", new_root, key, os.path.join(new_root, "2_other", "model_final.pth")])
    assert [k for k, _, _ in config_drift(recorded, other)] == [key]
    # the run folder itself (DATASETS.PSEUDO_DIR may be a folder): relative "." on both sides
    recorded = _recorded("OUTPUT_DIR", old_root, key, old_root + "/")
    assert config_drift(recorded, load_config("", ["OUTPUT_DIR", new_root, key, new_root])) == []


def test_a_real_change_of_a_run_path_is_refused_naming_both_values(tmp_path):
    init, other = str(tmp_path / "init.pth"), str(tmp_path / "other.pth")
    recorded = _recorded("OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", init)
    moved = str(tmp_path / "moved" / "a" / "b" / "run")
    assert config_drift(recorded, _run(moved, other)) == [("MODEL.WEIGHTS", init, other)]
    assert config_drift(recorded, _run(moved, "")) == [("MODEL.WEIGHTS", init, "")]  # random init now
    # an outside file that happens to sit at the same place relative to the run folder is another file
    recorded = _recorded("OUTPUT_DIR", str(tmp_path / "a" / "run"), "MODEL.WEIGHTS", str(tmp_path / "a" / "w.pth"))
    current = _run(str(tmp_path / "b" / "run"), str(tmp_path / "b" / "w.pth"))
    assert [k for k, _, _ in config_drift(recorded, current)] == ["MODEL.WEIGHTS"]
    # a path inside the recorded run now pointing outside the copy (and the reverse) is a change
    recorded = _recorded("OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", str(tmp_path / "run" / "w.pth"))
    assert [k for k, _, _ in config_drift(recorded, _run(moved, init))] == ["MODEL.WEIGHTS"]
    with pytest.raises(ConfigDriftError, match=r"MODEL\.WEIGHTS: '.*/run/w\.pth' then, '.*/init\.pth' now"):
        check_drift(recorded, _run(moved, init), "the run")


def test_a_path_given_alike_is_never_reported_as_a_difference(tmp_path):
    """The same file named inside the recorded run folder, from a copy of it: the same file, not a change
    (the message would read "'…' then, '…' now" with the two alike)."""
    old_root = str(tmp_path / "run")
    weights = os.path.join(old_root, "init.pth")
    recorded = _recorded("OUTPUT_DIR", old_root, "MODEL.WEIGHTS", weights)
    assert config_drift(recorded, _run(str(tmp_path / "moved" / "a" / "run"), weights)) == []


def test_a_value_that_prints_alike_is_never_reported_as_a_difference():
    """nan equals nothing, itself included: a recorded nan would otherwise be refused as "nan then, nan now"."""
    recorded = _recorded()
    recorded["INPUT"]["PIXEL_MEAN"] = [float("nan"), 0.5, 0.5]
    current = yaml.safe_load(yaml.safe_dump(recorded))  # another nan object
    assert current["INPUT"]["PIXEL_MEAN"][0] != recorded["INPUT"]["PIXEL_MEAN"][0]
    assert config_drift(recorded, current) == []
    current["INPUT"]["PIXEL_MEAN"][1] = 0.25
    assert [k for k, _, _ in config_drift(recorded, current)] == ["INPUT.PIXEL_MEAN"]


def test_a_key_one_config_lacks_is_absent_not_none():
    """A run recorded by a version of spcl without a key (or a config.yaml cut short) lacks it: the message
    says absent and why, where it used to say "None then"; a recorded null is still a value, not absent."""
    recorded = _recorded()
    del recorded["ALIGN"]["TARGET_MASK"]
    recorded["ALIGN"]["OLD_KEY"] = 1
    recorded["SEED"] = None
    current = load_config("", [])
    drift = config_drift(recorded, current)
    assert drift == [("ALIGN.OLD_KEY", 1, ABSENT), ("ALIGN.TARGET_MASK", ABSENT, "offline"), ("SEED", None, 0)]
    assert format_drift(drift).splitlines()[1] == "  ALIGN.TARGET_MASK: absent then, 'offline' now"
    assert config_drift({"A": {"B": None}}, {}) == [("A.B", None, ABSENT)]  # a recorded null against no key
    with pytest.raises(ConfigDriftError) as info:
        check_drift(recorded, current, "the run")
    assert ("absent: not in the recorded config / unknown to this version (made by another version of spcl, or "
            "a record cut short)\nRerun with") in str(info.value)
    del recorded["ALIGN"]["OLD_KEY"]
    with pytest.raises(ConfigDriftError) as info:
        check_drift(recorded, current, "the run")
    assert "\nabsent: not in the recorded config (made by" in str(info.value)
    recorded["ALIGN"]["TARGET_MASK"] = "offline"
    with pytest.raises(ConfigDriftError) as info:
        check_drift(recorded, current, "the run")
    assert "absent" not in str(info.value)  # only SEED differs: a value against a value


def test_a_run_made_before_a_key_was_added_holds_the_value_that_does_what_it_did():
    """A config.yaml recorded before SOLVER.FUSED_OPTIMIZER existed: a rerun at the default (the kernel those
    versions used) is the same run; asking for the fused kernel is a change, shown against its old value."""
    recorded = _recorded()
    del recorded["SOLVER"]["FUSED_OPTIMIZER"]
    assert config_drift(recorded, load_config("", [])) == []
    assert check_drift(recorded, load_config("", []), "the run") == []
    assert config_drift(recorded, load_config("", ["SOLVER.FUSED_OPTIMIZER", "True"])) == [
        ("SOLVER.FUSED_OPTIMIZER", False, True)]
    del recorded["SOLVER"]["AMP"]  # any other key a run lacks is still absent
    assert config_drift(recorded, load_config("", [])) == [("SOLVER.AMP", ABSENT, "")]


def _another(value):
    """A value of the same kind that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, (list, tuple)):
        return list(value) + [value[-1]] if value else ["other"]
    return "other"


def test_exactly_the_keys_that_cannot_change_a_result_may_differ_on_resume():
    """Every key of the config changed alone: the logging, checkpoint, data-location and TEST. / DATALOADER. keys
    give no drift, every other key is named as the one difference."""
    from spcl.config import get_cfg
    from spcl.config.drift import SAFE_KEYS, SAFE_SECTIONS, flatten

    base = get_cfg()
    recorded = yaml.safe_load(base.dump())
    keys = dict(flatten(base))
    assert set(SAFE_KEYS) <= set(keys)  # no misspelt key that would leave the real one guarded
    safe = {k for k in keys if k in SAFE_KEYS or k.startswith(SAFE_SECTIONS)}
    assert {"SOLVER.LOG_PERIOD", "DATALOADER.NUM_WORKERS", "TEST.FLIP", "DATASETS.DATA_DIR"} <= safe
    assert not {"SEED", "MODEL.BACKBONE", "ALIGN.BASE_LR", "SOLVER.OPTIMIZER", "LOSS.CONTRAST.TEMPERATURE",
                "DATASETS.SOURCE_LIST"} & safe
    for key, value in keys.items():
        changed = base.clone()
        *parents, leaf = key.split(".")
        node = changed
        for p in parents:
            node = node[p]
        node[leaf] = _another(value)
        assert [k for k, _, _ in config_drift(recorded, changed)] == ([] if key in safe else [key]), key


def test_a_long_drift_lists_twelve_keys_and_counts_the_rest():
    drift = [(f"K{i:02d}", i, i + 1) for i in range(20)]
    lines = format_drift(drift).splitlines()
    assert lines == [f"  K{i:02d}: {i} then, {i + 1} now" for i in range(12)] + ["  … and 8 more"]
    assert format_drift(drift[:12]).splitlines() == lines[:12]  # twelve: every one listed, nothing counted
    assert format_drift(drift[:13]).splitlines() == lines[:12] + ["  … and 1 more"]


def test_the_refusal_counts_every_differing_key_and_lists_them():
    """The ConfigDriftError a rerun stops with: where, how many keys differ, each as 'then, now'."""
    from spcl.config.drift import flatten

    current = load_config("", [])
    recorded = _recorded()
    changed = [k for k, _ in flatten(recorded) if k.startswith("INPUT.")][:13]
    assert len(changed) == 13
    for key in changed:
        section, leaf = key.split(".")
        recorded[section][leaf] = "was"
    with pytest.raises(ConfigDriftError) as info:
        check_drift(recorded, current, "stage align in out/run")
    lines = str(info.value).splitlines()
    assert lines[0] == "stage align in out/run was made with another config; 13 key(s) differ:"
    shown = sorted(changed)[:12]
    assert lines[1:13] == [f"  {k}: 'was' then, {current.INPUT[k.split('.')[1]]!r} now" for k in shown]
    assert lines[13] == "  … and 1 more"
    assert lines[14].startswith("Rerun with the original values")


def test_allow_config_change_goes_on_and_returns_the_drift():
    """PIPELINE.ALLOW_CONFIG_CHANGE (tools/train.py --allow-config-change): no error; the caller gets the keys."""
    recorded = _recorded("SEED", "1")
    current = load_config("", ["SEED", "2", "PIPELINE.ALLOW_CONFIG_CHANGE", "True"])
    assert check_drift(recorded, current, "the run") == [("SEED", 1, 2)]


def test_the_recorded_config_may_be_the_yaml_text_of_config_yaml():
    current = load_config("", ["SEED", "3"])
    assert config_drift(current.dump(), current) == []
    assert config_drift(load_config("", ["SEED", "4"]).dump(), current) == [("SEED", 4, 3)]


# Keys that cannot change a result (spcl/config/defaults.py at PIPELINE.ALLOW_CONFIG_CHANGE: the log / eval /
# checkpoint periods, where the data and the run are; likewise the checkpoints kept, the stop signals, the data
# check and the switch itself). Listed by hand, not read from SAFE_KEYS, so that a key dropped from it is seen.
CHANGEABLE = {"OUTPUT_DIR": "elsewhere", "SOLVER.LOG_PERIOD": 7, "SOLVER.EVAL_PERIOD": 9,
              "SOLVER.CHECKPOINT_PERIOD": 11, "SOLVER.KEEP_CHECKPOINTS": 0, "SOLVER.STOP_SIGNALS": ["SIGINT"],
              "DATASETS.DATA_DIR": "/data", "DATASETS.FOLDER.TRAIN_DIR": "/t", "DATASETS.FOLDER.VAL_DIR": "/v",
              "DATASETS.FOLDER.VAL_LABEL_DIR": "/l", "DATASETS.PREFLIGHT": False, "PIPELINE.ALLOW_CONFIG_CHANGE": True}


@pytest.mark.parametrize("key", sorted(CHANGEABLE))
def test_each_key_that_cannot_change_a_result_may_differ(key):
    recorded = _recorded()
    current = load_config("", [key, repr(CHANGEABLE[key]) if not isinstance(CHANGEABLE[key], str) else
                               CHANGEABLE[key]])
    assert config_drift(recorded, current) == []


def test_an_int_recorded_for_a_float_is_the_same_value():
    """`TEMPERATURE: 10` in a hand-written record is the 10.0 the config holds (the loader makes an int a float)."""
    recorded = _recorded()
    recorded["LOSS"]["CONTRAST"]["TEMPERATURE"] = 100
    current = load_config("", ["LOSS.CONTRAST.TEMPERATURE", "100"])
    assert current.LOSS.CONTRAST.TEMPERATURE == 100.0 and repr(current.LOSS.CONTRAST.TEMPERATURE) == "100.0"
    assert config_drift(recorded, current) == []


def test_an_unset_run_path_is_not_the_run_folder(tmp_path, monkeypatch):
    """"" (unset: no pseudo labels, random init) is no path: not the current directory, even where that is the
    run folder, whose own path relative to itself is "."."""
    monkeypatch.chdir(tmp_path)
    recorded = _recorded("OUTPUT_DIR", ".", "DATASETS.PSEUDO_DIR", "")
    current = load_config("", ["OUTPUT_DIR", ".", "DATASETS.PSEUDO_DIR", "."])
    assert config_drift(recorded, current) == [("DATASETS.PSEUDO_DIR", "", ".")]
    recorded = _recorded("OUTPUT_DIR", ".", "DATASETS.PSEUDO_DIR", ".")
    current = load_config("", ["OUTPUT_DIR", ".", "DATASETS.PSEUDO_DIR", ""])
    assert config_drift(recorded, current) == [("DATASETS.PSEUDO_DIR", ".", "")]


def test_a_path_key_that_is_no_hand_off_is_compared_as_written(tmp_path):
    """Only the hand-off paths (RUN_PATHS) follow a copied run folder: a file the user named (here the class
    index) under the old folder is not the copy's."""
    old_root, new_root = str(tmp_path / "run"), str(tmp_path / "copy")
    recorded = _recorded("OUTPUT_DIR", old_root, "DATASETS.CLASS_INDEX", os.path.join(old_root, "index.json"))
    current = load_config("", ["OUTPUT_DIR", new_root, "DATASETS.CLASS_INDEX", os.path.join(new_root, "index.json")])
    assert [k for k, _, _ in config_drift(recorded, current)] == ["DATASETS.CLASS_INDEX"]
