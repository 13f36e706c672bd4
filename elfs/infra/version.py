"""Which code computed a result: hashes of the package's own source, and the git commit when run from a checkout.

Each stage's cache key holds :func:`module_version` of the module that runs it: a hash of the source of every elfs
module that module imports, directly or not (its import closure inside the package, imports inside functions
included). An artifact computed by older code of that stage is never silently reused, while an edit elsewhere
(the report writer, the CLI, another stage) recomputes nothing it does not run. :func:`code_version`, the whole
package's hash, and the commit go into results.json. `package_version()` is the release --version reports.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # elfs/, above this infra/ folder


@functools.cache
def code_version() -> str:
    """sha256 (16 hex digits) over the relative paths and bytes of every .py file of the installed package."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """{dotted module name: source file} for every module of the package at ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the source at ``path`` imports anywhere in it (a function body too): for
    ``from a.b import c`` the module ``a.b.c`` when it is one, else ``a.b``; every package above each, whose
    ``__init__`` runs first."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in modules else node.module for n in names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            while name:
                found.add(name)
                name = name.rpartition(".")[0]
    return found


def import_closure(module: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``module`` and every package module it imports, directly or through others, sorted."""
    modules = module_files(package_dir)
    if module not in modules:
        raise ValueError(f"{module!r} is not a module of {package_dir}; valid: {sorted(modules)}")
    seen, todo = {module}, [module]
    while todo:
        for dep in imported_modules(modules[todo.pop()], modules) - seen:
            seen.add(dep)
            todo.append(dep)
    return sorted(seen)


def closure_version(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 (16 hex digits) over the names and bytes of ``module``'s import closure inside the package."""
    modules = module_files(package_dir)
    h = hashlib.sha256()
    for name in import_closure(module, package_dir):
        h.update(name.encode() + b"\0" + modules[name].read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def module_version(module: str) -> str:
    """The code version of one stage: :func:`closure_version` of ``module`` in the installed package (cached)."""
    return closure_version(module)


@functools.cache
def git_commit() -> str | None:
    """The commit of the source checkout the package runs from (with '-dirty' when it has uncommitted changes),
    or None for an installed wheel or when git is unavailable."""
    try:
        root = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if (Path(root).resolve() / "elfs") != PACKAGE_DIR:  # e.g. a wheel in a venv that sits inside a checkout
            return None
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


@functools.cache
def package_version() -> str:
    """The installed distribution's version, else pyproject.toml's beside the source, else 'unknown'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("elfs")
    except PackageNotFoundError:
        pass
    try:
        text = (PACKAGE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    return match.group(1) if match else "unknown"
