"""Every command line in README.md and docs/*.md parses with its command's real parser.

Commands are read from fenced code blocks (with `\\` continuations joined and `# comments`
dropped) and from inline code spans. Usage synopses are read as one example call: square
brackets are dropped, `a|b` and `{a,b}` take their first choice, a trailing `...` is
dropped, and the placeholders N and X stand for 1 and 0.5. Other capitalised placeholders
(RUN_DIR, PATH, EXPERIMENT) stay as they are, so they parse as positionals or values.
"""

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from fer_keras.console import commands

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDERS = {"N": "1", "X": "0.5"}
COMMAND = re.compile(r"python -m fer_keras\b|\bfer-keras\b")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _command_start(tokens):
    """`(command, index of its first argument)` in a token list, or None."""
    for index, token in enumerate(tokens):
        if token == "python" and tokens[index + 1:index + 2] == ["-m"]:
            module = tokens[index + 2] if index + 2 < len(tokens) else ""
            if module.startswith("fer_keras."):
                return module.split(".", 1)[1], index + 3
            if module == "fer_keras" and index + 3 < len(tokens):
                return tokens[index + 3], index + 4
        if token == "fer-keras" and index + 1 < len(tokens):
            return tokens[index + 1], index + 2
    return None


def _normalise(tokens):
    """A usage synopsis as one example call (see the module docstring)."""
    out = []
    for token in tokens:
        token = token.replace("[", "").replace("]", "")
        if token.startswith("{") and token.endswith("}"):
            token = token[1:-1].split(",")[0]
        if "|" in token:
            token = token.split("|")[0]
        if token.endswith("..."):
            token = token[:-3]
        if token:
            out.append(PLACEHOLDERS.get(token, token))
    return out


def command_lines(text):
    """`(line number, command line)` for every fer_keras command in a Markdown text."""
    # Entries are (first line, command, last line) until the end.
    found, fence, pending, pending_line, prose = [], False, "", 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            prose.append((number, line))
            continue
        if found and found[-1][2] == number - 1 and line[:1].isspace() \
                and line.lstrip().startswith("["):
            # A usage synopsis wrapped over indented lines of options.
            found[-1] = (found[-1][0], f"{found[-1][1]} {line.strip()}", number)
            continue
        if not pending:
            pending_line = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical, pending = pending + line, ""
        if COMMAND.search(logical):
            found.append((pending_line, logical, number))
    # Inline code may wrap over lines of prose; a span starts on the line it opens.
    joined = "\n".join(line for _, line in prose)
    starts = [number for number, line in prose for _ in range(len(line) + 1)]
    for match in INLINE_CODE.finditer(joined):
        span = match.group(1).replace("\n", " ").strip()
        if span.startswith(("python -m fer_keras", "fer-keras ")):
            found.append((starts[match.start()], span, None))
    return [(number, line) for number, line, _ in found]


def parse(line):
    """Parses one documented command line with its command's parser; returns its namespace.

    A line about the console script itself (`fer-keras --help`) or asking for help gives
    None.

    Raises:
        ValueError: if the line names no known command or its parser rejects it.
    """
    tokens = shlex.split(line, comments=True)
    start = _command_start(tokens)
    if start is None:
        raise ValueError(f"no fer_keras command in {line!r}")
    command, first = start
    if command in ("COMMAND", "--help", "-h"):
        return None  # The console script itself: `fer-keras COMMAND`, `fer-keras --help`.
    if command not in commands():
        raise ValueError(f"unknown command {command!r} in {line!r}")
    parser = importlib.import_module(f"fer_keras.{command}").build_parser()
    args = _normalise(tokens[first:])
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(args)
    except SystemExit as exit:
        if exit.code == 0:
            return None  # --help
        raise ValueError(f"{line!r} does not parse as {args}: "
                         f"{errors.getvalue().strip().splitlines()[-1:]}") from exit


DOCUMENTED = [(page, number, line) for page in PAGES
              for number, line in command_lines(page.read_text())]


@pytest.mark.parametrize("page, number, line", DOCUMENTED,
                         ids=[f"{page.name}:{number}" for page, number, _ in DOCUMENTED])
def test_documented_command_parses(page, number, line):
    try:
        parse(line)
    except ValueError as error:
        pytest.fail(f"{page.relative_to(REPO)}, line {number}: {error}")


def test_commands_are_found_in_every_form():
    text = "\n".join([
        "Run `python -m fer_keras.report --check` or",
        "`python -m fer_keras.evaluate",
        "saved_models/x/model.keras --no-mirror`.",
        "```bash",
        "KERASTUNER_TUNER_ID=chief \\",
        "    python -m fer_keras.tune tuning/smoke.toml --data d.csv   # the chief",
        "fer-keras fit baseline [--epochs N]",
        "    [--optimizer adam|sgd]",
        "```",
    ])
    assert command_lines(text) == [
        (5, "KERASTUNER_TUNER_ID=chief      python -m fer_keras.tune tuning/smoke.toml "
            "--data d.csv   # the chief"),
        (7, "fer-keras fit baseline [--epochs N] [--optimizer adam|sgd]"),
        (1, "python -m fer_keras.report --check"),
        (2, "python -m fer_keras.evaluate saved_models/x/model.keras --no-mirror")]
    assert parse(command_lines(text)[0][1]).data == "d.csv"
    fit = parse(command_lines(text)[1][1])
    assert (fit.experiment, fit.epochs, fit.optimizer) == ("baseline", 1, "adam")


@pytest.mark.parametrize("line, reason", [
    ("python -m fer_keras.fit baseline --no-such-flag", "unrecognized arguments"),
    ("python -m fer_keras.tune tuning/smoke.toml --limit 0", "--limit"),
    ("python -m fer_keras.fit", "required"),
    ("python -m fer_keras.fitt baseline", "unknown command"),
])
def test_stale_command_lines_fail(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse(line)


def test_every_page_is_linked_and_every_local_link_exists():
    readme = PAGES[0].read_text()
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"README does not link {page.name}"
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(REPO)} links to missing {target}"
