"""The documentation is executed: every command in the fenced blocks of README.md, docs/*.md and
experiments/README.md runs verbatim, from a fresh empty folder, as a user would type it.

Only an environment overlay makes a command affordable here (the words are never edited): ELFS_SMOKE=1 (the
`debug=smoke` data and step counts) for runs, ELFS_PLAN=1 (`plan=true`: compose, validate and cost every job)
for GPU-scale sweeps, DDP and SLURM. A command the rules below do not recognise fails the test, so nothing can
be documented without being run. The folder holds `.venv`, a link to the interpreter's own environment, as a
user's would after the README's set-up command; install lines are checked against pyproject.toml (they download
gigabytes), and CI runs the README's test command verbatim in a fresh environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = {
    "README.md": ROOT / "README.md",
    **{f"docs/{p.name}": p for p in sorted((ROOT / "docs").glob("*.md"))},
    "experiments/README.md": ROOT / "experiments" / "README.md",
}
SHELL = {"bash", "sh", "shell", "console"}
SETUP = "python3.11 -m venv .venv && .venv/bin/pip install -r requirements.txt -e . && .venv/bin/python -m "
PLANNED = re.compile(r"(\s-m\s.*experiment=paper_|experiment=paper_.*\s-m(\s|$)|\+launcher=|trainer=ddp)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ``` block; a block without a language holds output, not commands."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)]


def commands(doc: Path) -> list[tuple[str, str]]:
    """(kind, text): each line of a shell block, and each python block whole, in the order of the document."""
    out = []
    for lang, body in fenced_blocks(doc.read_text(encoding="utf-8")):
        if lang in SHELL:
            out += [("shell", ln.strip()) for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        elif lang == "python":
            out.append(("python", body))
    return out


def classify(line: str) -> tuple[str, dict[str, str]]:
    """What kind of command a documented line is and the overlay it runs under; unknown kinds fail the test."""
    words = line.split()
    head = " ".join(words[:3])
    if words[0] == "pip" and words[1:2] == ["install"]:
        return "install", {}
    if words[0] == "export" or head == "source .venv/bin/activate":
        return "environment", {}
    train = words[0] == "elfs" or head.startswith(("python -m elfs.train", ".venv/bin/python -m elfs.train"))
    if train and ("plan=true" in words or "--help" in words or "--version" in words):
        return "run", {}
    if train and PLANNED.search(" " + line + " "):
        return "run", {"ELFS_PLAN": "1"}
    if train:
        return "run", {"ELFS_SMOKE": "1"}
    if words[0] == "elfs-select" or head.startswith(("python -m elfs.select", "python -m elfs.data.demo")):
        return "run", {}
    if head.startswith("python -m elfs.aggregate"):
        return "run", {}
    if "label-studio start" in line or "cvat-cli " in line:
        return "handoff", {}  # needs the tool's server: tests/test_handoffs.py runs these lines against it
    raise AssertionError(f"a documented command the docs test does not know how to run: {line!r}")


def check_install(line: str) -> None:
    """A documented install line names files and extras that exist."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for group in re.findall(r"\.\[([\w,]+)\]", line):
        missing = set(group.split(",")) - extras
        assert not missing, f"{line!r} names extras {sorted(missing)}; pyproject.toml has {sorted(extras)}"
    for req in re.findall(r"-r\s+(\S+)", line):
        assert (ROOT / req).is_file(), line


def _env(overlay: dict[str, str], exported: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELFS_")}  # no overlay leaks from the caller
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # elfs, elfs-select, python
    return {**env, **exported, **overlay}


def run_documented(kind: str, text: str, cwd: Path, exported: dict[str, str]) -> str:
    """Run one documented command verbatim in ``cwd``; return its stdout (failing the test on a non-zero exit)."""
    if kind == "python":
        proc = subprocess.run([sys.executable, "-c", text], cwd=cwd, env=_env({}, exported), capture_output=True,
                              text=True, timeout=900)  # fmt: skip
    else:
        what, overlay = classify(text)
        if what == "install":
            check_install(text)
            return ""
        if what == "handoff":
            return ""
        if what == "environment":
            if text.startswith("export "):
                key, value = text.split(None, 1)[1].split("#")[0].strip().split("=", 1)
                exported[key] = os.path.expandvars(value)
            return ""
        proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=_env(overlay, exported), capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        if overlay.get("ELFS_PLAN") or "plan=true" in text:
            assert proc.stdout.strip().splitlines()[-1].startswith("plan: "), (text, proc.stdout[-2000:])
    assert proc.returncode == 0, f"{text!r} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_every_documented_command_is_recognised():
    """Fast: the rules know every command of every document (a new one must come with a way to run it)."""
    found = 0
    for doc in DOCS.values():
        for kind, text in commands(doc):
            found += 1
            if kind == "shell":
                what, _ = classify(text)
                if what == "install":
                    check_install(text)
    assert found >= 15


def test_the_readme_set_up_commands_are_the_two_ci_and_users_run():
    text = DOCS["README.md"].read_text(encoding="utf-8")
    for tail in ("elfs.train", "pytest"):
        assert f"\n    {SETUP}{tail}\n" in text, tail


@pytest.mark.slow
def test_the_documentation_runs_verbatim(tmp_path):
    """Every document's commands in order, in one fresh folder (the README's make `photos/` and a sweep that the
    later ones use), with `.venv` there as after the set-up command, whose run of the default is executed too."""
    cwd = tmp_path / "user"
    cwd.mkdir()
    (cwd / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    exported: dict[str, str] = {}
    readme_default = SETUP.split(" && ")[-1] + "elfs.train"  # `.venv/bin/python -m elfs.train`, verbatim
    run_documented("shell", readme_default, cwd, exported)
    ran = []
    for name, doc in DOCS.items():
        for kind, text in commands(doc):
            out = run_documented(kind, text, cwd, exported)
            ran.append((name, text))
            if "--budget 0.1 0.3" in text:
                assert sorted(p.name for p in (cwd / "outputs" / "select").iterdir())  # the answer folder exists
            if text.startswith("elfs -m selection.budget=0.1,0.3"):
                (sweep,) = (cwd / "outputs" / "multiruns").glob("*/*")
                assert (sweep / "summary.md").is_file() and len([d for d in sweep.iterdir() if d.is_dir()]) == 2
            if text.startswith("elfs --help"):
                assert "plan=true" in out and "debug=smoke" in out and "debug_mode" not in out
    assert len(ran) >= 15
