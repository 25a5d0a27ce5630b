"""Smoothing and episodes of video face records, on hand-made probability sequences."""

import csv
import doctest
import math

import pytest

from fer_keras.vision import episodes
from fer_keras.vision.episodes import TrackSmoother, find_episodes


def track(happy, track_id=0, step=0.2, file="clip.mp4"):
    """Records of one track, `happy` probabilities every `step` seconds (sad the rest)."""
    return [{"file": file, "track": track_id, "time": round(index * step, 4),
             "probabilities": {"happy": p, "sad": round(1 - p, 6)}}
            for index, p in enumerate(happy)]


def labels(found):
    return [(row["label"], row["start"], row["end"], row["records"]) for row in found]


def test_the_module_examples_run():
    assert doctest.testmod(episodes).failed == 0


def test_hysteresis_keeps_the_label_until_another_leads_by_the_margin():
    # sad leads by 0.06 then 0.08 (not more than the margin), then by 0.4.
    rows = track([0.9, 0.47, 0.46, 0.3, 0.3, 0.3])
    assert labels(find_episodes(rows, margin=0.1, min_track_seconds=0)) == [
        ("happy", 0.0, 0.4, 3), ("sad", 0.6, 1.0, 3)]
    assert labels(find_episodes(rows, margin=0.0, min_records=1, min_track_seconds=0)) == [
        ("happy", 0.0, 0.0, 1), ("sad", 0.2, 1.0, 5)]


def test_a_tie_goes_to_the_first_class_and_does_not_switch():
    rows = track([0.5, 0.5, 0.5])
    assert labels(find_episodes(rows, margin=0.0, min_records=1, min_track_seconds=0)) == [
        ("happy", 0.0, 0.4, 3)]


def test_one_frame_flickers_are_merged_into_the_stretch_before():
    rows = track([0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1])
    assert labels(find_episodes(rows, min_track_seconds=0)) == [
        ("happy", 0.0, 0.8, 5), ("sad", 1.0, 1.4, 3)]
    # A flicker at the very start joins the stretch after it.
    assert labels(find_episodes(track([0.1, 0.9, 0.9]), min_track_seconds=0)) == [
        ("happy", 0.0, 0.4, 3)]
    # With min_records=1 every stretch stands.
    assert len(find_episodes(rows, min_records=1, min_track_seconds=0)) == 4


def test_peak_and_mean_are_of_the_episodes_label():
    [only] = find_episodes(track([0.8, 0.6, 0.7]), min_track_seconds=0)
    assert only["peak_probability"] == 0.8
    assert only["mean_probability"] == pytest.approx(0.7)
    assert only["duration"] == pytest.approx(0.4)


def test_short_tracks_are_left_out_and_reported():
    rows = track([0.9] * 10) + track([0.1, 0.1], track_id=3)
    dropped = []
    found = find_episodes(rows, min_track_seconds=0.5, dropped=dropped)
    assert [row["track"] for row in found] == [0]
    assert dropped == [("clip.mp4", 3, 0.2, 2)]


def test_tracks_of_two_videos_are_kept_apart():
    rows = track([0.9] * 4, file="b.mp4") + track([0.1] * 4, file="a.mp4")
    found = find_episodes(rows, min_track_seconds=0)
    assert [(row["file"], row["label"]) for row in found] == [("a.mp4", "sad"),
                                                             ("b.mp4", "happy")]


def test_exponential_smoothing_follows_its_time_constant():
    smoother = TrackSmoother(1.0, "exponential")
    first, second = track([1.0, 0.0], step=0.5)
    smoother.update(first)
    smoother.update(second)
    weight = 1 - math.exp(-0.5)
    assert second["smoothed"]["happy"] == pytest.approx(1 - weight, abs=1e-6)
    assert second["smoothed_label"] == "happy"
    assert second["probabilities"]["happy"] == 0.0  # The raw values stay.
    # Another track starts from its own first record.
    other = smoother.update(track([0.2], track_id=1)[0])
    assert other["smoothed"]["happy"] == pytest.approx(0.2)


def test_window_smoothing_is_the_mean_of_the_last_seconds():
    smoother = TrackSmoother(0.5, "window")
    rows = [smoother.update(row) for row in track([1.0, 0.0, 0.5, 0.5], step=0.2)]
    # At 0.6 s the window (0.1, 0.6] holds the records at 0.2, 0.4 and 0.6.
    assert rows[3]["smoothed"]["happy"] == pytest.approx((0.0 + 0.5 + 0.5) / 3)
    assert rows[0]["smoothed"]["happy"] == 1.0


def test_smoothed_probabilities_decide_the_episodes():
    smoother = TrackSmoother(0.6)
    rows = [smoother.update(row) for row in track([0.9, 0.9, 0.1, 0.9, 0.9, 0.9])]
    assert [row["label"] for row in find_episodes(rows, min_records=1,
                                                  min_track_seconds=0)] == ["happy"]


def test_records_without_a_track_or_probabilities_pass_through():
    smoother = TrackSmoother(1.0)
    error = {"file": "x.mp4", "error": "cannot be read"}
    assert smoother.update(dict(error)) == error
    assert find_episodes([error, {"file": "p.jpg", "probabilities": {"happy": 1.0}}]) == []


@pytest.mark.parametrize("seconds,method", [(0, "exponential"), (-1, "window"),
                                            (float("nan"), "window"), (True, "window"),
                                            ("x", "window"), (1.0, "median")])
def test_bad_smoothing_is_one_line(seconds, method):
    with pytest.raises(ValueError, match="Received"):
        TrackSmoother(seconds, method)


def test_episodes_csv_has_one_row_per_episode(tmp_path):
    found = find_episodes(track([0.9, 0.9, 0.1, 0.1, 0.1]), min_track_seconds=0)
    path = episodes.write_episodes_csv(found, tmp_path / "episodes.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["happy", "sad"]
    assert list(rows[0]) == list(episodes.EPISODE_COLUMNS)
