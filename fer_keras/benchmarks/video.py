"""End-to-end speed on a real video, ours beside the `fer` package's, in one run.

What is timed, the same for every pipeline: read every frame of the video (OpenCV),
find the faces, classify them and write one JSON line per face to a file, from the first
frame read to the last line written. Loading the model (and, for `fer`, building
`FER()` with its TFLite interpreter) comes before the clock starts, as does one untimed
call of our model on a dummy batch; imports are not timed either.

* ours: `fer_keras.vision.recognize.predict(video, every=1)` with a `Classifier` of the
  model given (default: the model packaged with fer_keras, what `pip install` gives),
  its default detector (Haar) and its default face following
  (`fer_keras.vision.tracking`, `--detect-every`), or `detect_every=0` where asked.
* fer: `fer.FER().detect_emotions(frame)` on every frame (its Haar cascade and its
  quantized TFLite model, its defaults), each face written as a JSON line.

Each pipeline runs in a fresh Python process, one after another, `rounds` times in turn
(so a load that comes and goes on the machine falls on all of them alike); the median
round is reported. The `fer` package (25.10.3, MIT) is not a dependency: install its files
beside ours without its dependencies (it declares full `tensorflow`, PyTorch and MoviePy,
which its `FER` class does not need) into a folder of your choice, and pass it as
`fer_path`:

    pip install --no-deps --target /tmp/fer_only fer==25.10.3
    pip install --target /tmp/fer_only "setuptools<81" requests pillow
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FER_VERSION = "25.10.3"
ROUNDS = 3


def _ours(video, model, detect_every, out):
    import numpy as np

    from fer_keras.serving.runner import Classifier
    from fer_keras.vision.recognize import predict

    classifier = Classifier(model)
    classifier(np.zeros((1, *classifier.size, 1), np.uint8))
    classifier.model_seconds, classifier.faces_classified = 0.0, 0
    with open(out, "w", encoding="utf-8") as stream:
        start = time.perf_counter()
        records = predict([video], model=classifier, every=1, output=stream, progress=None,
                          detect_every=detect_every)
        seconds = time.perf_counter() - start
    faces = sum("label" in record for record in records)
    frames = len({record["frame"] for record in records if "frame" in record})
    tracks = len({record["track"] for record in records if "track" in record})
    return {"faces": faces, "frames_with_faces": frames, "tracks": tracks,
            "seconds": seconds, "model_seconds": classifier.model_seconds,
            "runtime": classifier.runtime}


def _fer(video, out):
    # Optional: the peer, importable only where its files were installed (fer_path).
    import cv2
    import fer
    from fer.fer import FER

    detector = FER()
    capture = cv2.VideoCapture(str(video))
    faces = frames = 0
    with open(out, "w", encoding="utf-8") as stream:
        start = time.perf_counter()
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            found = detector.detect_emotions(frame)
            for face in found:
                stream.write(json.dumps({"frame": index, "box": [int(v) for v in face["box"]],
                                         "emotions": face["emotions"]}) + "\n")
            faces += len(found)
            frames += bool(found)
            index += 1
        seconds = time.perf_counter() - start
    capture.release()
    return {"faces": faces, "frames_with_faces": frames, "seconds": seconds,
            "runtime": f"fer {fer.__version__}"}


def _frame_count(video):
    import cv2

    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def run_pipeline(kind, video, model=None, detect_every=None, fer_path=None, timeout=900):
    """One timed run in a fresh process: the worker's JSON figures, or a ValueError."""
    env = dict(os.environ)
    if kind == "fer":
        if fer_path is None:
            raise ValueError(f"The fer pipeline needs its files: pass --fer-path DIR where "
                             f"`pip install --no-deps --target DIR fer=={FER_VERSION}` put "
                             f"them.")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(fer_path), str(Path(__file__).resolve().parents[2]),
             env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "records.jsonl"
        argv = [sys.executable, "-m", "fer_keras.benchmarks.video", "--worker", kind,
                str(video), str(out), str(model), str(detect_every)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"The {kind} pipeline failed on {video}: {tail}")
    return json.loads(lines[-1])


def compare(video, models, fer_path=None, rounds=ROUNDS, detect_every_values=(None,),
            progress=sys.stderr):
    """Times each pipeline `rounds` times in turn; returns the result dict (see module)."""
    from fer_keras.vision.tracking import DEFAULT_DETECT_EVERY

    video = Path(video)
    if not video.is_file():
        raise ValueError(f"No video at {video}; pass the path of one (e.g. "
                         f"../shared/video/woman2.mp4).")
    pipelines = [("fer", None, None)] if fer_path is not None else []
    for model in models:
        for every in detect_every_values:
            pipelines.append(("ours", str(model),
                              DEFAULT_DETECT_EVERY if every is None else float(every)))
    runs = {index: [] for index in range(len(pipelines))}
    for round_index in range(rounds):
        for index, (kind, model, every) in enumerate(pipelines):
            figures = run_pipeline(kind, video, model, every, fer_path)
            runs[index].append(figures)
            if progress is not None:
                print(f"round {round_index + 1}/{rounds} {kind} {model or ''} "
                      f"{'' if every is None else f'detect_every={every:g} '}"
                      f"{figures['faces']} faces in {figures['seconds']:.2f} s",
                      file=progress, flush=True)
    frames = _frame_count(video)
    rows = []
    for index, (kind, model, every) in enumerate(pipelines):
        seconds = [figures["seconds"] for figures in runs[index]]
        median = statistics.median(seconds)
        chosen = min(runs[index], key=lambda figures: abs(figures["seconds"] - median))
        rows.append({"pipeline": kind, "model": model, "detect_every": every,
                     "runtime": chosen["runtime"], "faces": chosen["faces"],
                     "frames_with_faces": chosen["frames_with_faces"],
                     "tracks": chosen.get("tracks"),
                     "seconds": round(median, 3), "seconds_each_round": [
                         round(value, 3) for value in seconds],
                     "faces_per_second": round(chosen["faces"] / median, 2),
                     "model_seconds": (round(chosen["model_seconds"], 3)
                                       if "model_seconds" in chosen else None)})
    for row in rows:
        row.update(describe_model(row["model"]))
    peer = next((row for row in rows if row["pipeline"] == "fer"), None)
    for row in rows:
        row["vs_fer"] = (round(row["faces_per_second"] / peer["faces_per_second"], 2)
                         if peer else None)
    return {"video": str(video), "frames": frames, "rounds": rounds, "rows": rows,
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                        "python": platform.python_version(),
                        "load_average": list(os.getloadavg())}}


def describe_model(model):
    """`{"model_sha256", "packaged_from"}` of a model path (for a file), so a row still says
    which model it timed after the file at that path has changed."""
    from fer_keras.serving.packaged import packaged_model_file, packaged_model_info, sha256_of

    if model is None:
        return {}
    path = Path(model)
    keras_file = path / "model.keras" if path.is_dir() else path
    detail = {"model_sha256": sha256_of(keras_file) if keras_file.is_file() else None}
    packaged = packaged_model_file()
    if packaged is not None and keras_file.is_file() and keras_file.resolve() == packaged:
        detail["packaged_from"] = (packaged_model_info() or {}).get("source_run")
    return detail


def cpu_model():
    """`lscpu`'s model name (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_table(result):
    """A Markdown table of `compare`'s result."""
    lines = ["| pipeline | model | detect every (s) | faces | s (median) | faces/s | "
             "x fer | in the model (s) |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        every = "" if row["detect_every"] is None else f"{row['detect_every']:g}"
        ratio = "" if row["vs_fer"] is None else f"{row['vs_fer']:.2f}"
        model_seconds = "" if row["model_seconds"] is None else f"{row['model_seconds']:.2f}"
        model = row["model"] or "its own"
        if row.get("packaged_from"):
            model = f"{model} (packaged: {row['packaged_from']})"
        lines.append(f"| {row['pipeline']} ({row['runtime']}) | {model} "
                     f"| {every} | {row['faces']} | {row['seconds']:.2f} | "
                     f"{row['faces_per_second']:.1f} | {ratio} | {model_seconds} |")
    return "\n".join(lines)


def _worker(argv):
    kind, video, out, model, every = argv
    if kind == "fer":
        figures = _fer(video, out)
    else:
        figures = _ours(video, model, float(every), out)
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
    else:
        sys.exit("This module is the benchmark's worker; run `python -m fer_keras.video_bench`.")
