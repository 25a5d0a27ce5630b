"""fit touches only what it owns: output folders checked before any work, no litter, one
line for each bad input (issue 26's cases on fit and the commands' start-up)."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fer_keras import cli, console, fit
from fer_keras.training import loop, run_folder

REPO = Path(__file__).resolve().parents[1]


def _fit_args(data, out, *extra):
    return ["baseline", "--data", str(data), "--output-dir", str(out), "--epochs", "1",
            "--batch-size", "16", "--verbose", "0", *extra]


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("names", [["model.keras"], ["config.json"],
                                   ["history.csv", "model.keras"]])
def test_files_of_the_run_names_that_are_not_a_finished_run_are_kept(names, tiny_csv,
                                                                     tmp_path, capsys):
    out = tmp_path / "other"
    out.mkdir()
    for name in names:
        (out / name).write_bytes(b"the user's own " + name.encode())
    assert fit.main(_fit_args(tiny_csv, out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--overwrite" in line
    for name in names:
        assert (out / name).read_bytes() == b"the user's own " + name.encode()
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert not run_folder.staging_folder(out).exists()


def test_other_files_are_kept_even_with_overwrite(tiny_csv, tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "model.keras").write_bytes(b"x")
    (out / "thesis.txt").write_bytes(b"years of work")
    assert fit.main(_fit_args(tiny_csv, out, "--overwrite")) == 2
    assert "thesis.txt" in _one_error_line(capsys.readouterr().err)
    assert (out / "thesis.txt").read_bytes() == b"years of work"
    assert (out / "model.keras").read_bytes() == b"x"


def test_overwrite_replaces_run_files_the_user_named(tiny_csv, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "model.keras").write_bytes(b"an old model")
    assert fit.main(_fit_args(tiny_csv, out, "--overwrite")) == 0
    assert (out / "metrics.json").exists()


def test_output_dir_that_is_a_file_is_refused(tiny_csv, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_bytes(b"keep")
    assert fit.main(_fit_args(tiny_csv, target)) == 2
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert target.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fer2013.csv", "notes.txt"]


def test_output_dir_under_a_file_is_refused(tiny_csv, tmp_path, capsys):
    (tmp_path / "notes.txt").write_bytes(b"keep")
    assert fit.main(_fit_args(tiny_csv, tmp_path / "notes.txt" / "run")) == 2
    assert "notes.txt" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"),
                                          (errno.EPERM, "Operation not permitted")])
def test_an_unwritable_place_is_refused_before_training(code, reason, tiny_csv, tmp_path,
                                                        monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise OSError(code, reason)

    # What a read-only mount answers (root may write anywhere else, so it is simulated).
    monkeypatch.setattr(run_folder.tempfile, "mkstemp", refuse)
    out = tmp_path / "ro" / "run"
    assert fit.main(_fit_args(tiny_csv, out)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert reason in line and "not writable" in line
    assert not (tmp_path / "ro").exists()


def test_an_empty_mount_point_is_refused_before_training(tiny_csv, tmp_path, monkeypatch,
                                                         capsys):
    out = tmp_path / "mnt"
    out.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out or real_ismount(path))
    assert fit.main(_fit_args(tiny_csv, out)) == 2
    assert "mount point" in _one_error_line(capsys.readouterr().err)
    assert list(out.iterdir()) == []


def test_the_lock_in_an_unwritable_place_is_one_line(tmp_path, monkeypatch):
    real_open = open

    def refuse(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(ValueError, match="Read-only file system"):
        with run_folder.lock_run_folder(tmp_path / "run"):
            pass


def test_root_and_dot_as_output_dir(tiny_csv, tmp_path, monkeypatch, capsys):
    assert fit.main(_fit_args(tiny_csv, "/")) == 2
    assert "root" in _one_error_line(capsys.readouterr().err)
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_bytes(b"mine")
    monkeypatch.chdir(work)
    for name in (".", "./", "sub/.."):
        assert fit.main(_fit_args(tiny_csv, name, "--overwrite")) == 2
        assert "precious.txt" in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in work.iterdir()) == ["precious.txt"]
    assert (work / "precious.txt").read_bytes() == b"mine"


@pytest.mark.parametrize("content", ["[1, 2]", '"adam"', "3", '{"hyperparameters": [1]}'])
def test_hparams_that_are_not_an_object_are_one_line(content, tiny_csv, tmp_path, capsys):
    hparams = tmp_path / "list.json"
    hparams.write_text(content)
    out = tmp_path / "run"
    assert fit.main(_fit_args(tiny_csv, out, "--hparams", str(hparams))) == 2
    assert "JSON object" in _one_error_line(capsys.readouterr().err)
    assert not out.exists() and not run_folder.staging_folder(out).exists()


@pytest.mark.parametrize("key, value", [("precision", "float64"), ("protocol", "mine"),
                                        ("optimizer", "lbfgs"), ("augmentation", "wild"),
                                        ("schedule", "step"), ("class_weight", "inverse")])
def test_categorical_hparams_are_refused_before_any_file_is_written(key, value, tiny_csv,
                                                                    tmp_path, monkeypatch,
                                                                    capsys):
    hparams = tmp_path / "best.json"
    hparams.write_text(json.dumps({key: value}))
    loaded = []
    monkeypatch.setattr(loop, "train_in_staging", lambda *a, **k: loaded.append(1))
    out = tmp_path / "run"
    assert fit.main(_fit_args(tiny_csv, out, "--hparams", str(hparams))) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert key in line and repr(value) in line
    assert not loaded and not out.exists() and not run_folder.staging_folder(out).exists()
    assert not out.with_name(".run.lock").exists()


def test_a_fit_that_fails_before_its_first_epoch_leaves_no_staging_folder(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    out = tmp_path / "run"
    assert fit.main(_fit_args(bad, out)) == 2
    _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"] + (
        ["cache"] if (tmp_path / "cache").exists() else [])


def test_a_stale_staging_folder_without_a_finished_epoch_is_cleaned(tiny_csv, tmp_path):
    out = tmp_path / "run"
    staging = run_folder.staging_folder(out)
    staging.mkdir()
    (staging / "config.json").write_text('{"experiment": "baseline", "seed": 99}')
    assert fit.main(_fit_args(tiny_csv, out)) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 0
    assert not staging.exists()


def test_a_staging_folder_holding_other_files_is_left_alone(tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    staging = run_folder.staging_folder(out)
    staging.mkdir()
    (staging / "draft.docx").write_bytes(b"mine")
    assert fit.main(_fit_args(tiny_csv, out)) == 2
    assert "draft.docx" in _one_error_line(capsys.readouterr().err)
    assert (staging / "draft.docx").read_bytes() == b"mine"


def test_a_user_folder_named_like_a_retired_run_is_not_removed(tiny_csv, tmp_path):
    out = tmp_path / "run"
    retired = out.with_name("run.replaced")
    retired.mkdir()
    (retired / "photos.zip").write_bytes(b"mine")
    assert fit.main(_fit_args(tiny_csv, out)) == 0
    assert (retired / "photos.zip").read_bytes() == b"mine"


def test_help_names_the_console_script_and_does_not_import_keras():
    code = ("import sys\n"
            "from fer_keras import console\n"
            "try:\n"
            "    console.main(['fit', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.stdout.startswith("usage: fer-keras fit "), done.stdout[:200]
    assert done.stdout.strip().endswith("False False"), done.stdout[-200:]


def test_usage_names_python_m_outside_the_console_script(monkeypatch):
    monkeypatch.delenv(cli.INVOKED_AS_SWITCH, raising=False)
    assert fit.build_parser().format_usage().startswith("usage: python -m fer_keras.fit ")
    monkeypatch.setenv(cli.INVOKED_AS_SWITCH, "fer-keras")
    assert fit.build_parser().format_usage().startswith("usage: fer-keras fit ")


def test_console_restores_the_name_after_a_command(monkeypatch):
    monkeypatch.delenv(cli.INVOKED_AS_SWITCH, raising=False)
    with pytest.raises(SystemExit):
        console.main(["fit", "--help"])
    assert cli.INVOKED_AS_SWITCH not in os.environ


@pytest.mark.parametrize("switch, noisy", [("", False), ("1", True)])
def test_tensorflow_start_up_logs_are_quiet_unless_asked_for(switch, noisy):
    code = ("from fer_keras.cli import quiet_tensorflow_start\n"
            "quiet_tensorflow_start()\n"
            "import tensorflow\n"
            "print(tensorflow.__name__)\n")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", FER_KERAS_TF_LOGS=switch)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "tensorflow"
    assert ("oneDNN" in done.stderr) is noisy, done.stderr[-500:]


def test_a_user_folder_in_the_swap_path_is_refused_before_replacing(tiny_csv, tmp_path,
                                                                   capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    retired = out.with_name("run.replaced")
    retired.mkdir()
    (retired / "photos.zip").write_bytes(b"mine")
    assert fit.main(_fit_args(tiny_csv, out, "--overwrite")) == 2
    assert "run.replaced" in _one_error_line(capsys.readouterr().err)
    assert (retired / "photos.zip").read_bytes() == b"mine"
    assert (out / "metrics.json").read_text() == "{}"


def _readme_block(heading):
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    return section[section.index("```bash\n") + 8:section.index("\n```", section.index("```bash"))]


def test_the_readme_install_block_installs_one_variant():
    block = _readme_block("## Install")
    assert sum("pip install" in line for line in block.splitlines()) == 1, block


def test_the_readme_main_job_runs_as_written(real_data, tmp_path, monkeypatch, capsys):
    """fit, then evaluate with no --data, exactly as the README's main job writes them, on
    a small slice of the real file (one epoch)."""
    import gzip

    from fer_keras import evaluate

    commands = [line.split() for line in _readme_block("## The main job").splitlines()
                if line.startswith("python -m fer_keras.")]
    assert [words[2] for words in commands] == ["fer_keras.fit", "fer_keras.evaluate"]
    wanted = {"Training": 300, "PublicTest": 60, "PrivateTest": 60}
    lines = []
    with gzip.open(real_data, "rt") if str(real_data).endswith(".gz") else open(real_data) as f:
        lines.append(next(f))
        for line in f:
            usage = line.rstrip("\n").rsplit(",", 1)[1]
            if wanted.get(usage, 0) > 0:
                wanted[usage] -= 1
                lines.append(line)
            if not any(wanted.values()):
                break
    data = tmp_path / "path" / "to" / "fer2013.csv"
    data.parent.mkdir(parents=True)
    data.write_text("".join(lines))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER2013_PATH", raising=False)
    fit_args = commands[0][3:] + ["--epochs", "1", "--verbose", "0"]
    assert fit.main(fit_args) == 0
    capsys.readouterr()
    assert evaluate.main(commands[1][3:]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "accuracy" in captured.out
    assert "path/to/fer2013.csv" in captured.err
