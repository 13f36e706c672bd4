"""The real tools on the other side of a handoff (Label Studio, FiftyOne, cvat-cli, SLURM, Chromium).

Each tool is built outside the project's venv by `.ci/tools/<name>.sh DEST` (its own venv, Debian packages,
or a started service), because its dependencies need not agree with the project's. `.ci/run` starts every
such script in the background before the test command and exports `ELFS_TOOLS_DIR` and `ELFS_REQUIRE_TOOLS=1`;
a script writes `DEST.rc` (its exit code) when it ends. A test asks for a tool with `tool("name")`: it waits
for the build to end, and skips with the command that builds it where the developer has not built it; under
CI (`ELFS_REQUIRE_TOOLS=1`) a missing or failed tool is a failure, so a handoff test never silently skips.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str, *, wait_s: float = 900.0) -> Path:
    """The folder `.ci/tools/<name>.sh` built, once that build has ended successfully."""
    script = ROOT / ".ci" / "tools" / f"{name}.sh"
    assert script.is_file(), f"no build script {script} for tool {name!r}"
    base = os.environ.get("ELFS_TOOLS_DIR")
    required = os.environ.get("ELFS_REQUIRE_TOOLS") == "1"
    hint = (
        f"build it with: bash .ci/tools/{name}.sh /tmp/elfs-tools/{name}; echo $? >/tmp/elfs-tools/{name}.rc; "
        "export ELFS_TOOLS_DIR=/tmp/elfs-tools"
    )  # the .rc file says the build has ended (.ci/run writes it)
    if not base:
        if required:
            pytest.fail(f"ELFS_REQUIRE_TOOLS=1 but ELFS_TOOLS_DIR is unset; {hint}")
        pytest.skip(f"{name} is not built here; {hint}")
    dest, rc_file = Path(base) / name, Path(base) / f"{name}.rc"
    log = Path(base) / f"{name}.log"
    deadline = time.monotonic() + wait_s
    while not rc_file.exists():
        if not dest.exists() and not required:
            pytest.skip(f"{name} is not built in {base}; {hint}")
        if time.monotonic() > deadline:
            pytest.fail(f"{name}'s build did not end within {wait_s:.0f} s (log: {log})")
        time.sleep(2)
    rc = rc_file.read_text().strip()
    if rc != "0":
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        msg = f"building {name} failed (exit {rc}); the end of {log}:\n{tail}"
        pytest.fail(msg) if required else pytest.skip(msg)
    return dest
