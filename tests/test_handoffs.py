"""The hand-offs of elfs-select's answer, against the real tools on the other side (.ci/tools/<name>.sh builds each):
Label Studio's server, FiftyOne with a MongoDB server, cvat-cli's own argument parser, and report.html in headless
Chromium. One module so that the runs and the servers start once: three real `elfs-select` runs as a user types
them (the README's demo folder, nested; a flat folder; a .txt list spread over several folders), whose common
folders sit side by side so that ONE Label Studio server with the README's document root serves all three.
"""

from __future__ import annotations

import contextlib
import csv
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.external import tool
from tests.test_docs_commands import DOCS, commands

pytestmark = pytest.mark.slow

ELFS_BIN = Path(sys.executable).parent
README_LS = [t for k, t in commands(DOCS["README.md"]) if k == "shell" and "label-studio start" in t]
README_CVAT = [t for k, t in commands(DOCS["README.md"]) if k == "shell" and "cvat-cli " in t]
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str] | str, cwd: Path, env: dict | None = None, timeout: float = 600, **kw):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd!r} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads (started with start_new_session), SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "selection.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The folder the user works in (the README's commands run there)."""
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def user(home):
    """The user's folder, with the three image layouts side by side and one elfs-select run on each."""
    from PIL import Image

    env = {**os.environ, "PATH": f"{ELFS_BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "disabled"}
    env = {k: v for k, v in env.items() if not k.startswith("ELFS_") or k.startswith("ELFS_TOOLS")}
    _run(["python", "-m", "elfs.data.demo", "photos"], home, env)  # the README's: photos/part0|1/img*.png
    demo = sorted((home / "photos").rglob("*.png"))
    flat, listed = home / "flat", home / "lists"
    flat.mkdir()
    for i, src in enumerate(demo[:40]):  # a space, '#' and non-ASCII in names: the URL must quote them
        name = ["img {i:02d}.png", "#{i:02d} é.png", "x{i:02d}.png", "y{i:02d}.jpg"][i % 4].format(i=i)
        if name.endswith(".jpg"):
            Image.open(src).convert("RGB").save(flat / name, quality=95)
        else:
            shutil.copy(src, flat / name)
    lines = []
    for i, src in enumerate(demo[40:80]):
        dst = listed / ("one" if i % 2 else "two/sub") / f"p {i:02d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        lines.append(str(dst))
    (listed / "x.txt").write_text("not an image listed in a folder of its own\n")
    (home / "mine.txt").write_text("\n".join(lines) + "\n")
    runs = {}
    for key, argv in {
        "nested": "photos --budget 0.1 --clusters 10 backbone=efficientnet_lite0 --out picks",  # the README's
        "flat": "flat --budget 0.25 --clusters 4 --out picks_flat",
        "list": "mine.txt --budget 0.25 --clusters 4 --out picks_list",
    }.items():
        t0 = time.monotonic()
        proc = _run(["elfs-select", *argv.split()], home, {**env, "OMP_NUM_THREADS": "1"}, timeout=900)
        runs[key] = (home / argv.split()[-1], proc.stderr, time.monotonic() - t0)
        print(f"elfs-select {argv}: {runs[key][2]:.0f} s")
    return home, runs


# ---- Label Studio ---------------------------------------------------------------------------------------------


class LabelStudio:
    """A browser's session with the server: the login cookie, CSRF header and Referer its JSON API wants."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def request(self, method: str, path: str, body=None, form: bool = False) -> tuple[int, bytes]:
        headers = {"Referer": self.url + "/"}
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        if method != "GET":
            headers["X-CSRFToken"] = self.csrf()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, method: str, path: str, body=None, expect: int = 200):
        status, raw = self.request(method, path, body)
        assert status == expect, f"{method} {path} -> {status}: {raw[:1000]!r}"
        return json.loads(raw)

    def sign_in(self, email: str, password: str) -> None:
        status, _ = self.request("GET", "/user/login/")
        assert status == 200
        body = {"csrfmiddlewaretoken": self.csrf(), "email": email, "password": password}
        status, raw = self.request("POST", "/user/login/", body, form=True)
        assert status == 200 and any(c.name == "sessionid" for c in self.jar), raw[:500]


@pytest.fixture(scope="module")
def label_studio(home, tmp_path_factory):
    """Label Studio started once, as the README says, from the user's folder (so its document root is the folder
    above the three image folders), on a free loopback port with its data in tmp. It boots (30-60 s) while the
    elfs-select runs work (each on one thread); ``session()`` waits for it and signs in."""
    ls = tool("labelstudio")
    assert len(README_LS) == 1, README_LS
    port, email, pw = _free_port(), "elfs@example.com", "elfs-test-password"
    data = tmp_path_factory.mktemp("label-studio-data")
    env = {**os.environ, "PATH": f"{ls / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data), HOME=str(data), DJANGO_DB="sqlite")
    # the README's line, plus what a test server needs: loopback only, a free port, a first user, no browser
    cmd = f"{README_LS[0]} --no-browser --internal-host 127.0.0.1 --port {port} --username {email} --password {pw}"
    log, t0 = open(data / "server.log", "w"), time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", cmd], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )  # its own process group: the teardown ends the server and whatever it started
    url, signed_in = f"http://127.0.0.1:{port}", []

    def session() -> LabelStudio:
        if signed_in:
            return signed_in[0]
        deadline, ok = time.monotonic() + 300, False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    ok = r.status == 200
            if ok:
                break
            time.sleep(2)
        tail = (data / "server.log").read_text()[-3000:]
        assert ok, f"Label Studio did not answer /health (exit {proc.poll()}):\n{tail}"
        print(f"Label Studio answered /health {time.monotonic() - t0:.0f} s after its start")
        signed_in.append(LabelStudio(url))
        signed_in[0].sign_in(email, pw)
        return signed_in[0]

    try:
        yield session
    finally:
        _end_group(proc)
        log.close()


@pytest.mark.parametrize("layout", ["nested", "flat", "list"])
def test_label_studio_serves_every_task_image_in_priority_order(label_studio, user, layout):
    """The printed setup, done through Label Studio's HTTP API: one Local Files storage, the task file imported,
    every task's image served (200, the file's bytes), the tasks in priority order."""
    home, runs = user
    run = runs[layout][0]
    server = label_studio()
    summary = json.loads((run / "selection.json").read_text(encoding="utf-8"))
    setup = summary["labelstudio"]
    assert setup["document_root"] == str(home.resolve())  # what the README's "$(pwd -P)" gives the server
    (storage,) = setup["storages"]  # one storage holds every image of the run
    assert Path(storage).parent == home.resolve() and any(storage in line for line in setup["steps"])
    for budget in summary["budgets"]:
        tag = budget["tag"]
        project = server.json(
            "POST", "/api/projects", {"title": f"elfs {layout} {tag}", "label_config": LABEL_CONFIG}, expect=201
        )
        pid = project["id"]
        server.json(
            "POST", "/api/storages/localfiles", {"project": pid, "path": storage, "use_blob_urls": False}, expect=201
        )
        tasks = json.loads((run / f"labelstudio_{tag}.json").read_text(encoding="utf-8"))
        imported = server.json("POST", f"/api/projects/{pid}/import", tasks, expect=201)
        assert imported["task_count"] == len(tasks) == budget["count"]
        served = server.json("GET", f"/api/tasks?project={pid}&page_size={len(tasks) + 10}")
        served = served["tasks"] if isinstance(served, dict) else served
        served.sort(key=lambda t: t["id"])  # Label Studio's order: as imported
        assert [t["data"]["priority"] for t in served] == list(range(1, len(tasks) + 1))
        assert [t["data"]["filepath"] for t in served] == budget["files"]
        for t in served:
            status, raw = server.request("GET", t["data"]["image"])
            assert status == 200, (t["data"]["image"], status, raw[:300])
            assert raw == Path(t["data"]["filepath"]).read_bytes(), t["data"]["image"]


# ---- CVAT -----------------------------------------------------------------------------------------------------

CVAT_SHIM = """import json, os, sys, argparse
from cvat_cli._internal.commands_all import COMMANDS
from cvat_cli._internal.common import configure_common_arguments
parser = argparse.ArgumentParser(description=COMMANDS.description)  # as cvat_cli.__main__.main builds it
configure_common_arguments(parser)
COMMANDS.configure_parser(parser)
ns = vars(parser.parse_args(sys.argv[1:]))
ns = {k: (v if isinstance(v, (str, int, float, bool, list, type(None))) else str(v)) for k, v in ns.items()}
with open(os.environ["CVAT_PARSED"], "a") as f:
    f.write(json.dumps(ns) + "\\n")
"""


class _Code(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.codes: list[str] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        if tag == "code":
            self._in, self.codes = True, [*self.codes, ""]

    def handle_endtag(self, tag):
        self._in = self._in and tag != "code"

    def handle_data(self, data):
        if self._in:
            self.codes[-1] += data


@pytest.fixture(scope="module")
def cvat_tool() -> Path:
    return tool("cvat")


@pytest.fixture(scope="module")
def chromium_tool() -> Path:
    return tool("chromium")


# Each test names its tool's fixture before `user`, so that a missing tool skips before the elfs-select runs.
def test_cvat_commands_parse_with_cvat_cli_in_priority_order(cvat_tool, user, tmp_path):
    """The CVAT command of every report.html and of the README, run by POSIX sh (dash) with cvat-cli's own
    argument parser standing in for the network call: one task, every listed file, in priority order."""
    home, runs = user
    cvat = cvat_tool
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "cvat-cli"
    shim.write_text(f"#!{cvat / 'venv' / 'bin' / 'python'}\n{CVAT_SHIM}")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
    cases = []
    for run, _, _ in runs.values():
        page = _Code()
        page.feed((run / "report.html").read_text(encoding="utf-8"))
        (cmd,) = [c for c in page.codes if "cvat-cli " in c]
        first = json.loads((run / "selection.json").read_text())["budgets"][0]["tag"]
        cases.append((cmd, run, run / f"cvat_{first}.txt"))
    assert len(README_CVAT) == 1, README_CVAT
    cases.append((README_CVAT[0], home, home / "picks" / "cvat_0.1.txt"))
    for cmd, cwd, listed in cases:
        assert "xargs" not in cmd and "--sorting-method predefined" in cmd
        parsed = tmp_path / "parsed.jsonl"
        parsed.unlink(missing_ok=True)
        _run(["/bin/sh", "-c", cmd], cwd, {**env, "CVAT_PARSED": str(parsed)})
        (args,) = [json.loads(line) for line in parsed.read_text().splitlines()]  # one invocation: one task
        files = listed.read_text(encoding="utf-8").splitlines()
        assert args["resources"] == files and len(files) > 3, cmd
        assert "TaskCreate.execute" in args["_executor"]  # `task create`: what would run against the server
        assert args["sorting_method"] == "predefined" and args["resource_type"].endswith("local")
        assert args["labels"] and all("name" in lab for lab in args["labels"])
        rows = {r["filepath"]: r for r in _rows(listed.parent)}
        prio = f"priority_{listed.stem.split('_', 1)[1]}"
        assert [int(rows[f][prio]) for f in files] == list(range(1, len(files) + 1))


# ---- FiftyOne -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fiftyone(tmp_path_factory):
    """FiftyOne's venv and a MongoDB server on a free loopback port with a database in tmp: (python, env)."""
    fo = tool("fiftyone")
    work = tmp_path_factory.mktemp("fiftyone")
    port = _free_port()
    (work / "db").mkdir()
    log = open(work / "mongod.log", "w")
    mongod = subprocess.Popen(
        [str(fo / "mongod"), "--dbpath", str(work / "db"), "--port", str(port), "--bind_ip", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
                break
            assert mongod.poll() is None and time.monotonic() < deadline, (work / "mongod.log").read_text()[-2000:]
            time.sleep(0.5)
        env = {
            **os.environ,
            "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}",
            "FIFTYONE_DO_NOT_TRACK": "true",
            "FIFTYONE_DATABASE_VALIDATION": "false",  # no notice about MongoDB 6 being the oldest supported
            "HOME": str(work),  # ~/.fiftyone stays in tmp
        }
        yield fo / "venv" / "bin" / "python", env
    finally:
        mongod.terminate()
        try:
            mongod.wait(timeout=30)
        except subprocess.TimeoutExpired:
            mongod.kill()
        log.close()


# Built from paths spelled through the symlink, as from a list of paths a user has (FiftyOne keeps that spelling;
# its folder importers resolve links themselves).
FO_BUILD = """import sys, pathlib, fiftyone as fo
paths = sorted(str(p) for p in pathlib.Path(sys.argv[1]).rglob("*") if p.suffix in (".png", ".jpg"))
fo.Dataset.from_images(paths, name=sys.argv[2], persistent=True)
"""
FO_DUMP = """import json, sys, fiftyone as fo
out = {}
for name in sys.argv[1:]:
    ds = fo.load_dataset(name)
    fields = [f for f in ds.get_field_schema() if f.startswith("elfs_")]
    out[name] = {s.filepath: {"tags": list(s.tags), **{f: s[f] for f in fields}} for s in ds}
print(json.dumps(out))
"""


def test_fiftyone_script_tags_a_real_dataset_also_through_a_symlink(fiftyone, user, tmp_path):
    """fiftyone_tag.py as the user runs it, on a dataset it builds from the run and on one the user built from a
    symlinked path to the same folder: the selected samples (and only they) carry the tag, every field holds the
    run's values."""
    home, runs = user
    python, env = fiftyone
    run = runs["flat"][0]
    link = tmp_path / "linked photos"
    link.symlink_to(home / "flat", target_is_directory=True)
    _run([str(python), "-c", FO_BUILD, str(link), "linked"], tmp_path, env)
    first = _run([str(python), "fiftyone_tag.py"], run, env)  # creates "elfs-<run folder>" from selection.csv
    second = _run([str(python), str(run / "fiftyone_tag.py"), "--dataset", "linked"], tmp_path, env)
    dump = json.loads(_run([str(python), "-c", FO_DUMP, f"elfs-{run.name}", "linked"], tmp_path, env).stdout)
    summary = json.loads((run / "selection.json").read_text(encoding="utf-8"))
    rows = {r["filepath"]: r for r in _rows(run)}
    for name, out in ((f"elfs-{run.name}", first.stdout), ("linked", second.stdout)):
        samples = dump[name]
        assert len(samples) == len(rows), name
        if name == "linked":
            assert all(p.startswith(str(link)) for p in samples)  # the dataset kept the symlinked spelling
        by_file = {os.path.realpath(p): s for p, s in samples.items()}
        assert set(by_file) == set(rows)
        for budget in summary["budgets"]:
            tag, field = f"elfs_{budget['tag']}", "elfs_priority_" + budget["tag"].replace(".", "_")
            assert f"tagged {budget['count']} sample(s) {tag}" in out
            tagged = [f for f, s in by_file.items() if tag in s["tags"]]
            assert sorted(tagged) == sorted(budget["files"]), (name, tag)
            assert sorted(tagged, key=lambda f: by_file[f][field]) == budget["files"]  # priority order
            assert all(by_file[f][field] is None for f in set(by_file) - set(tagged))
        for f, s in by_file.items():
            assert s["elfs_cluster"] == int(rows[f]["pseudo_label"])
            assert s["elfs_score"] == pytest.approx(float(rows[f]["score"]), rel=1e-12)


# ---- report.html in a browser ---------------------------------------------------------------------------------

BROWSER = """import json, sys
from playwright.sync_api import sync_playwright
page_url, shot, exe = sys.argv[1:4]
errors = []
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: errors.append("console " + m.type + ": " + m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append("page error: " + str(e)))
    page.on("requestfailed", lambda r: errors.append("request failed: " + r.url[:200]))
    page.goto(page_url, wait_until="load", timeout=120000)
    images = page.evaluate(
        "Array.from(document.images).map(i => [i.getAttribute('src').slice(0, 80), i.complete, i.naturalWidth])"
    )
    note = page.evaluate("(document.getElementById('cluster-note') || {}).innerText || null")
    page.screenshot(path=shot, full_page=True)
    browser.close()
print(json.dumps({"errors": errors, "images": images, "note": note}))
"""


def test_report_opens_in_chromium_every_image_loaded_no_console_error(chromium_tool, user, tmp_path):
    """report.html of the README's 300-photo run in headless Chromium: every <img> decoded (natural width > 0), no
    console error or failed load, a screenshot saved; the page and the run's log say which clusters came out empty
    or tiny, as selection.csv counts them."""
    import numpy as np

    from elfs.handback.report_html import cluster_size_note

    _, runs = user
    chromium = chromium_tool
    run, log, _ = runs["nested"]
    shot = tmp_path / "report.png"
    proc = _run(
        [str(chromium / "venv" / "bin" / "python"), "-c", BROWSER, (run / "report.html").as_uri(), str(shot),
         str(chromium / "chromium")], tmp_path, timeout=300,
    )  # fmt: skip
    seen = json.loads(proc.stdout)
    assert not seen["errors"], seen["errors"]
    html_imgs = (run / "report.html").read_text(encoding="utf-8").count("<img ")
    assert len(seen["images"]) == html_imgs > 3
    assert all(done and width > 0 for _, done, width in seen["images"]), [i for i in seen["images"] if not i[2]]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    labels = np.array([int(r["pseudo_label"]) for r in _rows(run)])
    sizes = np.bincount(labels, minlength=10)
    note = cluster_size_note(labels, 10)
    if (sizes == 0).any() or (sizes < 6).any():  # a fifth of an even share of 300 images over 10 clusters
        assert note is not None and seen["note"] is not None and note in seen["note"] and note in log
        if (sizes == 0).any():
            assert f"{int((sizes == 0).sum())} came out empty" in note
    else:
        assert seen["note"] is None and note is None
    print(f"screenshot: {shot}")
