"""The package's layers, as a test: every module's imports, read with `ast` (those at the top
of a module and those inside functions alike), must go one way.

Fails on
  (a) an import cycle among fer_keras's modules,
  (b) a module importing a command module (a door), or a library module importing cli.py,
  (c) a module of a lower layer importing one of a higher layer.

To add a sub-package, give it a layer in LAYERS. Top-level modules of fer_keras are the
commands (doors) unless LAYERS names them.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fer_keras"

DOOR_HELPERS = "door helper"
DOOR = "door"
SPECIAL = "special"

# The one table of layers: a library module may import its own layer and the ones below it.
LAYERS = {
    # Library layers (sub-packages of fer_keras), lowest first.
    "fer_keras.utils": 0,
    "fer_keras.data": 1,
    "fer_keras.models": 2,
    "fer_keras.training": 3,
    "fer_keras.tuning": 4,
    "fer_keras.serving": 4,
    "fer_keras.vision": 5,
    "fer_keras.accuracy": 6,
    "fer_keras.adapt": 6,
    "fer_keras.benchmarks": 7,
    "fer_keras.reporting": 8,
    # Top-level modules that are not commands.
    "fer_keras.api": 5,                 # the Python API (`Recognizer`), over vision/serving
    "fer_keras.cli": DOOR_HELPERS,      # argparse types, run_command, entry_point: doors only
    "fer_keras.console": DOOR_HELPERS,  # `fer-keras COMMAND`: runs the doors by name
    "fer_keras": SPECIAL,               # the package's __init__.py
    "fer_keras.__main__": SPECIAL,      # `python -m fer_keras`
    # Every other top-level module is a command (a door): it parses arguments, calls the
    # library and prints; nothing but console.py imports it.
}

MAY_IMPORT_DOORS = {"fer_keras.console", "fer_keras.__main__"}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules():
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = all_modules()


def kind_of(module):
    """The layer number of a library module, or DOOR_HELPERS, DOOR or SPECIAL."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if prefix != "fer_keras" and (module == prefix or module.startswith(prefix + ".")):
            return LAYERS[prefix]
    if module == "fer_keras":
        return LAYERS["fer_keras"]
    if module.count(".") == 1:
        return DOOR
    raise KeyError(module)


def imports_of(module, path):
    """The fer_keras modules that `module` imports anywhere in its file, with line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            # `from fer_keras.data import sources` imports the module fer_keras.data.sources;
            # `from fer_keras.data.sources import load_splits` imports fer_keras.data.sources.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES
                       else source for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES and target.startswith("fer_keras"):
                target = target.rpartition(".")[0]  # `import fer_keras.x.y` of a name
            if target in MODULES and target != module:
                found.append((target, node.lineno))
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_layer():
    unknown = []
    for module in MODULES:
        try:
            kind_of(module)
        except KeyError:
            unknown.append(module)
    assert not unknown, f"Give these modules' sub-packages a layer in LAYERS: {unknown}"


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted({target for target, _ in graph[node]}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "Import cycles (each line: modules that import each other):\n" + \
        "\n".join("  " + " <-> ".join(cycle) for cycle in cycles)


def _violations():
    """(a) is test_no_import_cycles; here (b) and (c), one line each."""
    problems = []
    for module, targets in sorted(GRAPH.items()):
        kind = kind_of(module)
        for target, line in sorted(set(targets), key=lambda item: (item[1], item[0])):
            target_kind = kind_of(target)
            where = f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {module} imports"
            if target_kind == DOOR and module not in MAY_IMPORT_DOORS:
                problems.append(f"{where} the command module {target}")
            elif isinstance(kind, int) and target_kind == DOOR_HELPERS:
                problems.append(f"{where} {target}, which only doors may import")
            elif isinstance(kind, int) and isinstance(target_kind, int) and target_kind > kind:
                problems.append(f"{where} {target}, a higher layer ({kind} < {target_kind})")
            elif isinstance(kind, int) and target == "fer_keras.__main__":
                problems.append(f"{where} {target}")
    return problems


def test_imports_go_one_way():
    problems = _violations()
    assert not problems, f"{len(problems)} imports break the layers:\n" + "\n".join(problems)


@pytest.mark.parametrize("module, expected", [
    ("fer_keras.utils.names", 0), ("fer_keras.models", 2), ("fer_keras.accuracy.tta", 6),
    ("fer_keras.fit", DOOR), ("fer_keras.cli", DOOR_HELPERS), ("fer_keras", SPECIAL)])
def test_the_layer_table_reads_as_written(module, expected):
    assert kind_of(module) == expected


def test_the_checks_catch_what_they_are_for(tmp_path):
    graph = {"a": [("b", 1)], "b": [("c", 1)], "c": [("a", 1)], "d": [("a", 1)]}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "probe.py"
    source.write_text("import os\n"
                      "from fer_keras.data import sources\n"
                      "def late():\n"
                      "    from fer_keras.models.layers import forward_passes\n"
                      "    import fer_keras.fit\n")
    assert sorted(imports_of("fer_keras.utils.probe", source)) == [
        ("fer_keras.data.sources", 2), ("fer_keras.fit", 5), ("fer_keras.models.layers", 4)]
