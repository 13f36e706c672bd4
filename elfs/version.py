"""Which code computed a result: a hash of the package's own source, and the git commit when run from a checkout.

The source hash is part of every cache key, so an artifact computed by older code is never silently reused
(any edit of a module under elfs/ recomputes the stages); the commit goes into results.json beside it.
`package_version()` is the release a command reports with --version.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def code_version() -> str:
    """sha256 (16 hex digits) over the relative paths and bytes of every .py file of the installed package."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


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
