"""The search job file: its format, its checks and the budget it plans.

A job is a TOML file in `tuning/` (see `tuning/smoke.toml`):

    experiment = "deep_emotion"   # required: a name from the experiments table
    tuner = "hyperband"           # "hyperband" (default), "bayesian" or "random"
    objective = "val_accuracy"    # default; or "val_loss"
    seed = 1                      # a positive integer

    [search_space.learning_rate]  # bounds per hyperparameter (`fer_keras.tuning.hypermodel`)
    min = 1e-4
    max = 2e-2

    [budget]
    max_epochs = 9                # hyperband; bayesian and random take max_trials, epochs

`load_job` checks all of it before any data is read and returns a `Job`;
`planned_budget` says how many trials and epochs the job will run.
"""

import dataclasses
import math
import os
import tomllib
from pathlib import Path

from fer_keras.training.experiments import list_experiments
from fer_keras.utils.names import did_you_mean

TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVES = ("val_accuracy", "val_loss")
TOP_KEYS = ("experiment", "tuner", "objective", "seed", "teachers", "search_space", "budget")
REQUIRED = object()
BUDGET_KEYS = {
    "hyperband": {"max_epochs": REQUIRED, "factor": 3, "hyperband_iterations": 1},
    "bayesian": {"max_trials": REQUIRED, "epochs": REQUIRED, "num_initial_points": None},
    "random": {"max_trials": REQUIRED, "epochs": REQUIRED},
}
COMMON_BUDGET_KEYS = {"executions_per_trial": 1, "max_consecutive_failed_trials": 3}
BUDGET_MINIMUM = {"factor": 2}


@dataclasses.dataclass(frozen=True)
class Job:
    """A checked search job.

    Attributes:
        path: the job file.
        name: the job's name (the file name without `.toml`, a plain folder name, see
            `check_job_name`); it names the run and result folders.
        experiment: the experiment searched.
        tuner: "hyperband", "bayesian" or "random".
        objective: "val_accuracy" (maximised) or "val_loss" (minimised).
        seed: oracle and shuffle seed (a positive integer: Keras Tuner draws a random seed
            for 0).
        search_space: the checked search space (see `fer_keras.tuning.hypermodel`).
        budget: the tuner's budget keys with defaults filled in.
        teachers: run folders whose averaged probabilities every trial distils from
            (`fer_keras.training.distill`), predicted once for the search; empty for
            hard labels. `search_space.distill_temperature` / `distill_weight` need them.
    """

    path: Path
    name: str
    experiment: str
    tuner: str
    objective: str
    seed: int
    search_space: dict
    budget: dict
    teachers: tuple = ()

    @property
    def max_epochs(self):
        """The longest training of one trial, in epochs."""
        return self.budget["max_epochs" if self.tuner == "hyperband" else "epochs"]

    def record(self):
        """The fields that define the search (what a resumed run must not change)."""
        record = {"experiment": self.experiment, "tuner": self.tuner,
                  "objective": self.objective, "seed": self.seed,
                  "search_space": self.search_space, "budget": self.budget}
        if self.teachers:
            # Only when given, so that searches recorded before teachers existed continue.
            record["teachers"] = list(self.teachers)
        return record


def _integer(value, where, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}. Received: {where}={value!r}")
    return value


def check_job_name(path):
    """Refuses a job file whose name cannot name a folder of its own.

    The name (the file name without `.toml`) names `runs/NAME/` and `results/NAME/` beside
    the job file, which `--overwrite` deletes and replaces; `...toml` would name `runs/..`,
    the job file's own folder. So the name must be a plain folder name: not empty, no
    leading dot (which also rules out `.` and `..`), no path separator, no control
    character and no surrounding spaces.

    Returns:
        The name.
    """
    path = Path(path)
    name = path.stem
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if (not name or name.startswith(".") or name != name.strip()
            or any(char in separators or ord(char) < 32 or ord(char) == 127 for char in name)):
        raise ValueError(
            f"{path}: the job name {name!r} (the file name without .toml) cannot name the "
            "job's runs/ and results/ folders: it must be a plain folder name, with no "
            "leading dot, path separator or control character. Rename the file, e.g. to "
            f"{path.with_name('my_job.toml')}.")
    return name


def check_inside(folder, parent, flag):
    """Refuses a folder the tuner would create or delete outside its intended parent.

    Both paths are resolved (symbolic links and `..` followed), and `folder` must lie
    strictly inside `parent`: `--runs-dir .`, `/` or `..`, or a job folder that is a
    link to somewhere else, never get a search state written into them or deleted.

    Args:
        folder: the folder to create, fill or delete.
        parent: the folder it must lie inside.
        flag: the option that sets it, named in the refusal.

    Returns:
        `folder`, unchanged.
    """
    folder, parent = Path(folder), Path(parent)
    resolved, base = folder.resolve(), parent.resolve()
    if base not in resolved.parents:
        raise ValueError(
            f"{folder} resolves to {resolved}, which is not strictly inside {base}: the "
            "tuner writes and deletes only a folder of the job's own in there. Pass a "
            f"{flag} naming a new or empty folder, e.g. {parent / 'my_job'}.")
    return folder


def load_job(path):
    """Reads and checks a job file; every problem names the file and the key.

    Args:
        path: a TOML job file.

    Returns:
        A `Job`.

    Raises:
        ValueError: for a missing or unparsable file, a file name that is not a plain
            folder name (`check_job_name`), an unknown experiment, tuner, objective or key,
            a missing required key, a wrong type, a bound that is not a finite number or
            an inverted range.
            A misspelt file, experiment, tuner, objective or key gets the closest names.
    """
    # Lazy: the hypermodel imports Keras and Keras Tuner, which `tune --help` must not.
    from fer_keras.tuning.hypermodel import check_search_space

    path = Path(path)
    if not path.is_file():
        # Job files beside the path given and in tuning/, matched on their names.
        jobs = {each.stem: str(each) for folder in (Path("tuning"), path.parent)
                for each in sorted(folder.glob("*.toml"))}
        raise ValueError(f"Job file not found: {path}.{did_you_mean(path.stem, jobs)} Job "
                         "files live in tuning/, e.g. tuning/smoke.toml.")
    check_job_name(path)
    try:
        # utf-8-sig: TOML is UTF-8, and Windows editors often begin such a file with a
        # byte-order mark, which tomllib rejects as an invalid character.
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error

    def fail(message):
        raise ValueError(f"{path}: {message}")

    for key in raw:
        if key not in TOP_KEYS:
            fail(f"unknown key {key!r}.{did_you_mean(key, TOP_KEYS)} A job file takes "
                 f"{', '.join(TOP_KEYS)}.")
    for key in ("experiment", "search_space", "budget"):
        if key not in raw:
            fail(f"missing required key {key!r}. See tuning/smoke.toml for a complete job.")
    experiment = raw["experiment"]
    names = list_experiments()
    if experiment not in names:
        fail(f"experiment: unknown experiment {experiment!r}.{did_you_mean(experiment, names)}"
             f" Valid names: {', '.join(names)}.")
    tuner = raw.get("tuner", "hyperband")
    if tuner not in TUNERS:
        fail(f"tuner must be one of {', '.join(TUNERS)}. Received: tuner={tuner!r}."
             + did_you_mean(tuner, TUNERS))
    objective = raw.get("objective", "val_accuracy")
    if objective not in OBJECTIVES:
        fail(f"objective must be one of {', '.join(OBJECTIVES)}. "
             f"Received: objective={objective!r}." + did_you_mean(objective, OBJECTIVES))
    try:
        seed = _integer(raw.get("seed", 1), "seed", 1)
        search_space = check_search_space(raw["search_space"])
    except ValueError as error:
        fail(str(error))

    teachers = raw.get("teachers", [])
    if (not isinstance(teachers, list)
            or not all(isinstance(each, str) and each.strip() for each in teachers)):
        fail(f"teachers must be a list of run folders, e.g. teachers = "
             f"[\"saved_models/fer_vgg_kaggle_long\"]. Received: teachers={teachers!r}")
    if len(set(teachers)) != len(teachers):
        fail(f"teachers lists a run twice. Received: teachers={teachers!r}")
    distilled = [name for name in ("distill_temperature", "distill_weight")
                 if name in search_space]
    if distilled and not teachers:
        fail(f"search_space.{distilled[0]} needs teachers: add teachers = "
             f"[\"saved_models/RUN\", ...] (committed runs of the experiment's protocol "
             f"and label set).")

    budget_in = raw["budget"]
    if not isinstance(budget_in, dict):
        fail(f"budget must be a table ([budget]). Received: budget={budget_in!r}")
    allowed = dict(BUDGET_KEYS[tuner], **COMMON_BUDGET_KEYS)
    for key in budget_in:
        if key not in allowed:
            known = sorted({k for keys in BUDGET_KEYS.values() for k in keys})
            hint = (f"it does not apply to tuner {tuner!r}." if key in known
                    else "unknown key." + did_you_mean(key, list(allowed)))
            fail(f"budget.{key}: {hint} Tuner {tuner!r} takes {', '.join(allowed)}.")
    budget = {}
    for key, default in allowed.items():
        if key not in budget_in:
            if default is REQUIRED:
                fail(f"missing required key budget.{key} (tuner {tuner!r} needs "
                     + ", ".join(k for k, v in allowed.items() if v is REQUIRED) + ").")
            budget[key] = default
            continue
        try:
            budget[key] = _integer(budget_in[key], f"budget.{key}", BUDGET_MINIMUM.get(key, 1))
        except ValueError as error:
            fail(str(error))
    return Job(path=path, name=path.stem, experiment=experiment, tuner=tuner,
               objective=objective, seed=seed, search_space=search_space, budget=budget,
               teachers=tuple(teachers))


def hyperband_plan(max_epochs, factor=3, iterations=1):
    """The rounds a Hyperband search runs, by Keras Tuner's formulas.

    Returns:
        A list of `(bracket, round, trials, epochs, initial_epoch)`: each round trains
        `trials` models from `initial_epoch` to `epochs` (later rounds continue the best
        models of the round before).
    """
    brackets, epochs = 0, max_epochs
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    final_size = math.ceil(1 + math.log(max_epochs, factor))
    plan = []
    for _ in range(iterations):
        for bracket in reversed(range(brackets)):
            for round_num in range(bracket + 1):
                shrink = factor ** (bracket - round_num)
                plan.append((bracket, round_num,
                             math.ceil(final_size / (bracket + 1) * shrink),
                             math.ceil(max_epochs / shrink),
                             0 if round_num == 0 else math.ceil(max_epochs / (shrink * factor))))
    return plan


def planned_budget(job):
    """Returns `(trials, epochs)`: how many trials the job runs and the epochs they train."""
    executions = job.budget["executions_per_trial"]
    if job.tuner == "hyperband":
        plan = hyperband_plan(job.budget["max_epochs"], job.budget["factor"],
                              job.budget["hyperband_iterations"])
        return (sum(size for _, _, size, _, _ in plan),
                executions * sum(size * (end - start) for _, _, size, end, start in plan))
    return job.budget["max_trials"], executions * job.budget["max_trials"] * job.budget["epochs"]

