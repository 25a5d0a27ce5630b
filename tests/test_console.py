import configparser
import importlib
import importlib.metadata
from pathlib import Path

import pytest

from fer_keras import console

REPO = Path(__file__).resolve().parents[1]


def _declared_scripts():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(line.replace(" ", "").split("=", 1) for line in lines)


def test_setup_cfg_declares_the_console_script_and_it_resolves():
    declared = _declared_scripts()
    assert declared == {"fer-keras": "fer_keras.console:main"}
    module, function = declared["fer-keras"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_installed_entry_point_matches_setup_cfg():
    installed = {entry.name: entry
                 for entry in importlib.metadata.entry_points(group="console_scripts")}
    if "fer-keras" not in installed:
        pytest.fail("fer-keras is not installed as a console script; reinstall the package "
                    "(pip install -e . --no-deps) after changing setup.cfg")
    assert installed["fer-keras"].value == _declared_scripts()["fer-keras"]
    assert installed["fer-keras"].load() is console.main


def test_every_command_module_is_a_subcommand():
    found = console.commands()
    assert {"fit", "evaluate", "tune", "export", "predict", "bench", "report",
            "reference"} <= set(found)
    assert not {"cli", "console", "__main__", "data", "tune_jobs"} & set(found)
    for command in found:
        module = importlib.import_module(f"fer_keras.{command}")
        # build_parser is what tests/test_docs.py checks documented command lines with.
        assert callable(module.main) and callable(module.build_parser), command
        assert console.summary(command).endswith("."), command


def test_subcommand_runs_the_module_with_its_arguments(capsys):
    assert console.main(["tune", str(REPO / "tuning" / "smoke.toml"), "--dry-run"]) == 0
    assert "about 2 trials training 4 epochs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        console.main(["tune", "--limit", "0", "job.toml"])
    assert exited.value.code == 2


def test_help_and_unknown_commands(capsys):
    assert console.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {command} " in out for command in console.commands())
    assert console.main([]) == 2
    assert console.main(["evalute", "x.keras"]) == 2
    assert "Did you mean 'evaluate'?" in capsys.readouterr().err
