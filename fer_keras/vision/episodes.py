"""Video people can read: probabilities smoothed over time, and episodes of one label.

A video's face records (`fer_keras.vision.recognize.predict_video`: `track`, `time`,
`probabilities`) flicker from frame to frame. Two steps turn them into what a reader wants:

- `TrackSmoother` smooths each track's probabilities over time, causally (each record
  sees only the records before it), so it runs while the video is read and the annotated
  copy can show the smoothed label. `exponential`: an exponential moving average whose time
  constant is `seconds` (weight `1 - exp(-dt / seconds)` for a record `dt` seconds after the
  last one, so uneven sampling is handled); `window`: the mean of the records of the last
  `seconds` seconds. The record gets `smoothed` (probabilities) and `smoothed_label`.
- `find_episodes` cuts each track into stretches of one label: one row per stretch with
  track, label, start, end, duration, peak and mean probability of that label. Changing
  label needs hysteresis (the new label must lead the current one by `margin`), a stretch
  of fewer than `min_records` records (a one-frame flicker) is merged into the stretch
  before it, and tracks seen for less than `min_track_seconds` (typically a false
  detection) are left out and counted.

Example, on hand-made records of one track:

>>> records = [{"track": 0, "time": t / 5, "probabilities": {"happy": p, "sad": 1 - p}}
...            for t, p in enumerate([0.9, 0.8, 0.2, 0.9, 0.3, 0.2, 0.1])]
>>> [(e["label"], e["start"], e["end"]) for e in find_episodes(records, min_track_seconds=0)]
[('happy', 0.0, 0.6), ('sad', 0.8, 1.2)]
"""

import csv
import math

SMOOTHING_METHODS = ("exponential", "window")
DEFAULT_MARGIN = 0.1
"""How far (in probability) a new label must lead the current one for an episode to end."""
DEFAULT_MIN_RECORDS = 2
"""Stretches of fewer records than this are flickers, merged into the stretch before."""
DEFAULT_MIN_TRACK_SECONDS = 0.5
"""Tracks seen for less than this (first to last record) are left out of the episodes."""
EPISODE_COLUMNS = ("file", "track", "label", "start", "end", "duration", "records",
                   "peak_probability", "mean_probability")


def check_smoothing(seconds, method="exponential"):
    """Validates `--smooth SECONDS` and its method; returns `(seconds, method)`.

    Raises:
        ValueError: naming the bad value.
    """
    try:
        valid = math.isfinite(float(seconds)) and float(seconds) > 0
    except (TypeError, ValueError):
        valid = False
    if not valid or isinstance(seconds, bool):
        raise ValueError(f"--smooth takes a positive number of seconds. Received: "
                         f"smooth={seconds!r}")
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"--smooth-method must be one of {', '.join(SMOOTHING_METHODS)}. "
                         f"Received: {method!r}")
    return float(seconds), method


class TrackSmoother:
    """Smooths each track's probabilities over time, one record at a time.

    Args:
        seconds: the exponential time constant, or the window length.
        method: "exponential" or "window" (see the module docstring).

    `update(record)` adds `smoothed` and `smoothed_label` to a classified record that has a
    `track` and a `time` (of one video, in time order) and returns it; other records are
    returned as they are. Records of different videos need different smoothers.
    """

    def __init__(self, seconds, method="exponential"):
        self.seconds, self.method = check_smoothing(seconds, method)
        self._state = {}  # track -> (time, smoothed) or a list of (time, probabilities)

    def update(self, record):
        if "probabilities" not in record or record.get("track") is None:
            return record
        track, now = record["track"], float(record["time"])
        current = record["probabilities"]
        if self.method == "exponential":
            previous = self._state.get(track)
            if previous is None:
                smoothed = dict(current)
            else:
                then, last = previous
                weight = 1.0 - math.exp(-max(now - then, 0.0) / self.seconds)
                smoothed = {name: last[name] + weight * (p - last[name])
                            for name, p in current.items()}
            self._state[track] = (now, smoothed)
        else:
            window = [item for item in self._state.get(track, [])
                      if now - item[0] < self.seconds] + [(now, current)]
            self._state[track] = window
            smoothed = {name: sum(item[1][name] for item in window) / len(window)
                        for name in current}
        record["smoothed"] = {name: round(p, 6) for name, p in smoothed.items()}
        record["smoothed_label"] = max(smoothed, key=smoothed.get)
        return record


def _stretches(rows, key, margin):
    """Splits one track's rows into `[label, [rows]]` runs with hysteresis."""
    stretches = []
    for row in rows:
        probabilities = row[key]
        top = max(probabilities, key=probabilities.get)  # Ties: the first in class order.
        if stretches:
            current = stretches[-1][0]
            if top == current or probabilities[top] - probabilities[current] <= margin:
                stretches[-1][1].append(row)
                continue
        stretches.append([top, [row]])
    return stretches


def _merge_flickers(stretches, min_records):
    """Merges stretches shorter than `min_records` into the one before (the first one into
    the one after), then joins neighbours that now share a label."""
    merged = []
    for label, rows in stretches:
        if merged and len(rows) < min_records:
            merged[-1][1].extend(rows)
        elif merged and merged[-1][0] == label:
            merged[-1][1].extend(rows)
        else:
            merged.append([label, list(rows)])
    if len(merged) > 1 and len(merged[0][1]) < min_records:
        merged[1][1][:0] = merged[0][1]
        merged.pop(0)
    return merged


def find_episodes(records, margin=DEFAULT_MARGIN, min_records=DEFAULT_MIN_RECORDS,
                  min_track_seconds=DEFAULT_MIN_TRACK_SECONDS, dropped=None):
    """Episodes of one label per track, in order of track then start time.

    Args:
        records: face records of one or more videos (`file`, `track`, `time`,
            `probabilities`, and `smoothed` if `TrackSmoother` ran: then the smoothed
            probabilities decide the labels). Records without a track or probabilities
            (photos, errors) are ignored.
        margin: the lead a new label needs over the current one to start an episode.
        min_records: stretches of fewer records are merged into their neighbour.
        min_track_seconds: tracks spanning less time (first to last record) are left out.
        dropped: a list that receives `(file, track, seconds, records)` of each track left
            out, for the caller to report.

    Returns:
        A list of dicts with `EPISODE_COLUMNS` keys. `end` is the time of the episode's
        last record, so a one-record episode lasts 0 seconds; `peak_probability` and
        `mean_probability` are of the episode's label over its records.
    """
    by_track = {}
    for record in records:
        if "probabilities" in record and record.get("track") is not None:
            by_track.setdefault((record.get("file", ""), record["track"]), []).append(record)
    episodes = []
    for (file, track), rows in sorted(by_track.items(), key=lambda item: (str(item[0][0]),
                                                                          item[0][1])):
        rows = sorted(rows, key=lambda row: row["time"])
        span = rows[-1]["time"] - rows[0]["time"]
        if span < min_track_seconds:
            if dropped is not None:
                dropped.append((file, track, round(span, 4), len(rows)))
            continue
        key = "smoothed" if all("smoothed" in row for row in rows) else "probabilities"
        for label, stretch in _merge_flickers(_stretches(rows, key, margin), min_records):
            values = [row[key][label] for row in stretch]
            start, end = stretch[0]["time"], stretch[-1]["time"]
            episodes.append({"file": file, "track": track, "label": label,
                             "start": round(start, 4), "end": round(end, 4),
                             "duration": round(end - start, 4), "records": len(stretch),
                             "peak_probability": round(max(values), 4),
                             "mean_probability": round(sum(values) / len(values), 4)})
    return episodes


def write_episodes_csv(episodes, path):
    """Writes `find_episodes` rows as a CSV with `EPISODE_COLUMNS`; returns the path.

    The caller checks first that `path` may be written (`fer_keras.vision.recognize.
    check_writable`), as for `--csv`.
    """
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EPISODE_COLUMNS)
        writer.writeheader()
        writer.writerows(episodes)
    return path
