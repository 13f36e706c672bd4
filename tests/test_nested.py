"""Budgets that nest and images already labelled, on hand-checkable rankings."""

from __future__ import annotations

import numpy as np
import pytest

from elfs.select.double_end import double_end, nested_beta_range


def test_nested_beta_range_by_hand():
    # inner window: beta 0.2, budget 0.1 -> ranks [0.2, 0.3) from the hard end; a 0.3 window holding it starts
    # at most at 0.2 and ends at least at 0.3: beta in [0, 0.2]
    assert nested_beta_range(0.2, 0.1, 0.3) == pytest.approx((0.0, 0.2))
    assert nested_beta_range(0.8, 0.1, 0.5) == pytest.approx((0.4, 0.5))  # and never past 1 - budget
    with pytest.raises(ValueError, match="prev_budget <= budget"):
        nested_beta_range(0.1, 0.5, 0.3)


def test_a_window_is_shifted_to_hold_the_smaller_one():
    h = np.arange(10, dtype=float)  # hardness: index 9 is the hardest
    inner = double_end(h, 0.2, 0.5)  # drop 9..5, keep the two next: 4, 3
    assert inner.tolist() == [3, 4]
    # budget 0.4 at beta 0 would keep 6..9 (no overlap): shifted by the fewest ranks to hold 3, 4 -> 3..6
    assert double_end(h, 0.4, 0.0, contains=inner).tolist() == [3, 4, 5, 6]
    assert double_end(h, 0.4, 0.5, contains=inner).tolist() == [1, 2, 3, 4]  # already holds it: unchanged
    with pytest.raises(ValueError, match="consecutive ranks"):
        double_end(h, 0.4, 0.0, contains=np.array([1, 4]))


def test_excluded_images_are_never_chosen_and_the_budget_counts_new_ones(tmp_path):
    from elfs.config import SelectionConfig
    from elfs.errors import DataError
    from elfs.stages.select import exclude_indices, read_exclude, select_coreset

    h = np.arange(20, dtype=float)
    kept = select_coreset(SelectionConfig(), "hard", h, None, 20, 0.25, 0.0, 0, candidates=np.arange(15))
    assert kept.tolist() == [10, 11, 12, 13, 14]  # 5 = 0.25 * 20 new images, the hardest not excluded

    listed = tmp_path / "labelled.txt"
    listed.write_text(f"a/x.png\n{tmp_path / 'root' / 'b.png'}\n\n")
    ids = ["a/x.png", "b.png", "c.png"]
    assert exclude_indices(read_exclude(str(listed)), ids, tmp_path / "root").tolist() == [0, 1]
    listed.write_text("nope.png\n")
    with pytest.raises(DataError, match="names 1 image\\(s\\) that are not in the data: nope.png"):
        exclude_indices(read_exclude(str(listed)), ids, tmp_path / "root")


def test_the_exclude_file_is_read_once_when_the_data_loads(tmp_path, compose_cfg):
    """selection.exclude is read and matched when the data loads (a bad entry fails before any stage); the pipeline
    then reads the data's record of it, never the file again."""
    from elfs.config import to_typed
    from elfs.data import image_ids
    from elfs.pipeline import candidates, prepare_data

    listed = tmp_path / "labelled.txt"
    listed.write_text("# labelled in round one\n#3\n\n#0\n")
    cfg = to_typed(compose_cfg(["+experiment=digits_quick", f"selection.exclude={listed}"]))
    ds, _, _ = prepare_data(cfg)
    assert ds.excluded == {"#0", "#3"} and image_ids(ds.train)[:2] == ["#0", "#1"]
    listed.unlink()
    assert candidates(ds).tolist() == [i for i in range(len(ds.train)) if i not in (0, 3)]
