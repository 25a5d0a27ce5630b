import pytest

from fer_keras.cli import run_command


class Diverged(RuntimeError):
    pass


def _raise(error):
    def body():
        raise error
    return body


def test_statuses_and_messages(capsys):
    assert run_command(lambda: None) == 0
    assert run_command(lambda: 3) == 3
    assert run_command(_raise(ValueError("bad row 7 in x.csv"))) == 2
    assert capsys.readouterr().err == "error: bad row 7 in x.csv\n"
    assert run_command(_raise(KeyboardInterrupt()), interrupted="Run it again.") == 130
    assert "Run it again." in capsys.readouterr().err
    assert run_command(_raise(Diverged("loss is NaN")), failures=(Diverged,)) == 1
    assert capsys.readouterr().err == "error: loss is NaN\n"


def test_unexpected_errors_keep_their_traceback():
    with pytest.raises(RuntimeError):
        run_command(_raise(RuntimeError("a bug")))
