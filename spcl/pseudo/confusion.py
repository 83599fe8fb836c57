"""What wrong pseudo labels say instead: reading `confusion_on_kept_pixels` of thresholds.json (rows =
true class, columns = pseudo label, counts of kept pixels with ground truth)."""
from __future__ import annotations

from typing import Optional, Sequence


def most_confused_with(confusion: Sequence[Sequence[int]], true_class: int) -> Optional[tuple[int, float]]:
    """(label, share): the pseudo label other than `true_class` given most often to the kept pixels of
    `true_class`, and its share of all that class's kept pixels; None when none of them is mislabelled.
    Ties go to the lower class index."""
    row = confusion[true_class]
    total = sum(row)
    wrong = [(count, -label) for label, count in enumerate(row) if label != true_class and count > 0]
    if total == 0 or not wrong:
        return None
    count, neg_label = max(wrong)
    return -neg_label, count / total
