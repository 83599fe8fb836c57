"""spcl/pseudo/confusion.py and its uses: which wrong pseudo label a class's kept pixels get most often,
on hand-made confusion matrices (rows = true class, columns = pseudo label)."""
from __future__ import annotations

import pytest

from spcl.engine.stages.pseudo_labels import _instead
from spcl.pseudo import most_confused_with

CONF = [[50, 30, 20],   # class 0: right 50, labelled 1 thirty times, 2 twenty times
        [0, 10, 0],     # class 1: never mislabelled
        [5, 5, 0],      # class 2: never right; 0 and 1 tie
        [0, 0, 0]]      # (a 4th row, e.g. a class without kept pixels; K = 3 columns are enough here)


def test_the_most_frequent_wrong_label_and_its_share_of_the_kept_pixels():
    label, share = most_confused_with(CONF, 0)
    assert label == 1 and share == pytest.approx(30 / 100)  # share of all 100 kept pixels, not of the 50 wrong


def test_ties_go_to_the_lower_class_and_a_class_never_right_still_counts():
    assert most_confused_with(CONF, 2) == (0, pytest.approx(0.5))


def test_none_when_nothing_is_mislabelled_or_nothing_was_kept():
    assert most_confused_with(CONF, 1) is None
    assert most_confused_with(CONF, 3) is None


def test_the_stage_log_names_what_a_missed_class_is_labelled_instead():
    names = ["person", "rider", "car", "bus"]
    assert _instead({"confusion_on_kept_pixels": CONF}, 0, names) == \
        " (its kept pixels most often mislabelled rider: 30%)"
    assert _instead({"confusion_on_kept_pixels": CONF}, 1, names) == ""
    assert _instead({}, 0, names) == ""  # thresholds.json written before the matrix existed
