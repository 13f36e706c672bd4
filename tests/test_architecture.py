"""The package's rooms and what each may import: no import cycle (imports inside functions count too), and no
module importing one of a higher layer. A newcomer reads LAYERS to learn where a new module goes."""

from __future__ import annotations

import ast
import fnmatch
import functools
from pathlib import Path

from elfs.infra.version import PACKAGE_DIR, imported_modules, module_files

#: lowest first; a module may import its own layer and those below, never above (patterns: fnmatch on names)
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation: imports no elfs module above it",
        ["elfs", "elfs.errors", "elfs.infra", "elfs.infra.names", "elfs.infra.version", "elfs.infra.distributed"]
        + ["elfs.infra.sampling", "elfs.infra.progress", "elfs.infra.heap"],
    ),
    (
        "plain helpers",
        ["elfs.tables.paper", "elfs.infra.overrides", "elfs.handback.output_files", "elfs.infra.job_names"]
        + ["elfs.infra.no_effect"],
    ),
    ("schema, cache, how a training runs", ["elfs.config", "elfs.cache", "elfs.infra.runtime", "elfs.infra.workers"]),
    (
        "components: data, encoders, models, the math of each method, the answer files",
        [
            "elfs.data",
            "elfs.data.*",
            "elfs.models",
            "elfs.models.*",
            "elfs.method",
            "elfs.method.*",
            "elfs.infra.fp32",
            "elfs.cluster",
            "elfs.cluster.*",
            "elfs.training",
            "elfs.training.*",
            "elfs.dynamics",
            "elfs.dynamics.*",
            "elfs.select",
            "elfs.select.[!_]*",
            "elfs.handback",
            "elfs.handback.*",
        ],
    ),
    ("checks before work", ["elfs.preflight"]),
    ("stages: config and artifacts in, one cache entry out", ["elfs.stages", "elfs.stages.*"]),
    ("the stage graph and its results", ["elfs.pipeline", "elfs.tables", "elfs.tables.results"]),
    (
        "the program: one job (elfs.run), its outputs, sweeps, plans, the DDP session",
        ["elfs.run", "elfs.plan", "elfs.tables.report", "elfs.tables.aggregate", "elfs.tracking", "elfs.launch"],
    ),
    ("the Python API: a selection from a notebook", ["elfs.api"]),
    (
        "commands: argv in, exit code out; nothing imports them",
        ["elfs.cli", "elfs.cli.*", "elfs.train", "elfs.aggregate", "elfs.select.__main__"],
    ),
]

#: the commands wing: the only modules allowed to read argv and pick exit codes
COMMANDS = ["elfs.cli", "elfs.cli.*", "elfs.train", "elfs.aggregate", "elfs.select.__main__"]


def _layer_of(module: str) -> int:
    hits = [i for i, (_, pats) in enumerate(LAYERS) if any(fnmatch.fnmatchcase(module, p) for p in pats)]
    assert hits, f"{module} belongs to no layer in tests/test_architecture.py: add it to LAYERS"
    return max(hits)  # the most specific entry (elfs.select.__main__ is above elfs.select)


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, frozenset[str]]:
    """Every module of the package and the package modules it imports (parsed once per test session)."""
    modules = module_files(PACKAGE_DIR)
    return {m: frozenset(imported_modules(p, modules) - {m}) for m, p in modules.items()}


def _own_ancestors(module: str) -> set[str]:
    """The packages above a module, whose __init__ Python runs first: importing them is no dependency of note."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles():
    graph = {m: deps - _own_ancestors(m) for m, deps in _graph().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_imports_a_higher_layer():
    bad = [
        f"{m} ({LAYERS[_layer_of(m)][0]}) imports {d} ({LAYERS[_layer_of(d)][0]})"
        for m, deps in _graph().items()
        for d in sorted(deps - _own_ancestors(m))
        if _layer_of(d) > _layer_of(m)
    ]
    assert not bad, "\n".join(bad)


def _is_command(module: str) -> bool:
    return any(fnmatch.fnmatchcase(module, p) for p in COMMANDS)


def test_nothing_below_the_commands_imports_them():
    """The commands (elfs/cli/ and the `python -m` shims) stand on top: a job, the API or a stage never reaches
    back into argv parsing or exit codes."""
    bad = [f"{m} imports {d}" for m, deps in _graph().items() if not _is_command(m) for d in deps if _is_command(d)]
    assert not bad, "\n".join(bad)
    assert _layer_of("elfs.cli.main") == len(LAYERS) - 1


def test_rank_primitives_import_no_other_elfs_module():
    assert _graph()["elfs.infra.distributed"] == set()


def test_stages_read_their_inputs_not_the_root_config():
    """A stage's inputs are its signature plus the Context's small fields: no stage module reads ``.cfg``."""
    offenders = []
    for path in sorted((PACKAGE_DIR / "stages").glob("*.py")):
        if path.name == "context.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "cfg":
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_the_checker_sees_imports_inside_functions(tmp_path: Path):
    pkg = tmp_path / "elfs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from elfs.b import g\n    return g\n")
    (pkg / "b.py").write_text("import elfs.a\n\ndef g():\n    return 1\n")
    modules = module_files(pkg)
    assert imported_modules(modules["elfs.a"], modules) == {"elfs", "elfs.b"}
    assert imported_modules(modules["elfs.b"], modules) == {"elfs", "elfs.a"}


def _functions():
    """(name, lines, parameters) of every function of the package, as experiments/code_metrics.py counts them."""
    import importlib.util

    path = PACKAGE_DIR.parent / "experiments" / "code_metrics.py"
    spec = importlib.util.spec_from_file_location("code_metrics", path)
    metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metrics)
    return list(metrics.functions(PACKAGE_DIR))


def test_functions_stay_short_and_take_few_parameters():
    """At most 2 functions of elfs/ exceed 80 lines and at most 3 take more than 10 parameters: a function past
    either is doing several things (split it) or handed its inputs in pieces (hand over the record)."""
    fns = _functions()
    long = sorted(f"{name} ({lines} lines)" for name, lines, _ in fns if lines > 80)
    wide = sorted(f"{name} ({n} parameters)" for name, _, n in fns if n > 10)
    assert len(long) <= 2, long
    assert len(wide) <= 3, wide


def test_training_sits_below_the_stages_and_the_commands_on_top():
    """The training room is used by the stages (the proxy, the beta search, the evaluations) and uses none of
    them; the commands are the top floor."""
    assert _layer_of("elfs.training.classifier") < _layer_of("elfs.stages.dynamics")
    assert _layer_of("elfs.training.classifier") < _layer_of("elfs.stages.evaluate")
    graph = _graph()
    assert not {d for m, deps in graph.items() if m.startswith("elfs.training") for d in deps if "stages" in d}
    assert {d for d in graph["elfs.stages.trainings"] if d.startswith("elfs.training")}
    assert all(_layer_of(m) <= _layer_of("elfs.cli.main") for m in graph)
