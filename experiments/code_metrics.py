"""Print the package's size smells: the longest functions, the functions taking more than 10 parameters, and the
imports that run back up a floor (a module importing one of a higher layer in tests/test_architecture.py).

    python experiments/code_metrics.py [--top N]
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "elfs"


def functions(package: Path = PACKAGE):
    """(qualified name, lines, parameters) for every function and method under the package."""
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
                n = len([p for p in params if p.arg not in ("self", "cls")]) + bool(a.vararg) + bool(a.kwarg)
                yield f"{'.'.join(rel.parts)}.{node.name}:{node.lineno}", node.end_lineno - node.lineno + 1, n


def upward_imports() -> list[str]:
    """The arrows that run back up a floor, as tests/test_architecture.py's LAYERS define the floors."""
    spec = importlib.util.spec_from_file_location("_arch", ROOT / "tests" / "test_architecture.py")
    arch = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(arch)

    def layer(m: str) -> int | None:
        hits = [i for i, (_, pats) in enumerate(arch.LAYERS) if any(fnmatch.fnmatchcase(m, p) for p in pats)]
        return max(hits) if hits else None

    out = []
    for m, deps in sorted(arch._graph().items()):
        for d in sorted(deps - arch._own_ancestors(m)):
            lm, ld = layer(m), layer(d)
            if lm is None or ld is None:
                out.append(f"{m} -> {d} (no layer for {m if lm is None else d})")
            elif ld > lm:
                out.append(f"{m} (floor {lm}) -> {d} (floor {ld})")
    return out


def package_arrows_both_ways() -> list[str]:
    """Pairs of top-level rooms (elfs.X, a package or a root module) that import each other: one stands both above
    and below the other."""
    spec = importlib.util.spec_from_file_location("_arch", ROOT / "tests" / "test_architecture.py")
    arch = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(arch)
    room = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    edges: dict[tuple[str, str], str] = {}
    for m, deps in arch._graph().items():
        for d in deps - arch._own_ancestors(m):
            if room(m) != room(d):
                edges.setdefault((room(m), room(d)), f"{m} -> {d}")
    return [f"{edges[a, b]}  and  {edges[b, a]}" for a, b in sorted(edges) if a < b and (b, a) in edges]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    fns = list(functions())
    long = sorted(fns, key=lambda f: -f[1])
    print(f"functions: {len(fns)}; longer than 80 lines: {sum(f[1] > 80 for f in fns)}")
    for name, lines, _ in long[: args.top]:
        print(f"  {lines:4d} lines  {name}")
    wide = sorted((f for f in fns if f[2] > 10), key=lambda f: -f[2])
    print(f"taking more than 10 parameters: {len(wide)}")
    for name, _, n in wide:
        print(f"  {n:4d} params {name}")
    up = upward_imports()
    print(f"imports running back up a floor: {len(up)}")
    for line in up:
        print(f"  {line}")
    both = package_arrows_both_ways()
    print(f"rooms importing each other (one stands above and below the other): {len(both)}")
    for line in both:
        print(f"  {line}")


if __name__ == "__main__":
    main()
