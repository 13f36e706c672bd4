"""Hand-offs of a selection to labelling tools, written into the run folder by
:func:`selection_report.write_selection_outputs` (each file atomically: temp name, then ``os.replace``).

Every list below is in PRIORITY order (:func:`selection_report.priority_order`): a team that stops early has
still covered the clusters evenly.

* ``selection.json`` - always. ``{"format": "elfs-selection/1", "method", "score_name", "nested", "n_images",
  "paths": "absolute" | "ids", "labelstudio_document_root", "labelstudio": {"document_root", "storages",
  "start", "steps"}, "budgets": [{"budget", "tag", "beta", "count",
  "files", "ids", "indices"}, ...]}``; ``files`` are absolute paths (or the ids ``#i`` of an in-memory dataset).
* ``labelstudio_<budget>.json`` - Label Studio tasks (see :func:`labelstudio_tasks` for how to import them).
* ``cvat_<budget>.txt`` - one absolute path per line, for ``cvat-cli`` (:func:`cvat_command` is the command).
* ``fiftyone_tag.py`` - run it with FiftyOne installed to tag the selected samples (``elfs_<budget>``).
* ``selected_<budget>/`` - symlinks ``<priority>_<basename>`` to the kept images (zero-padded, so a file browser
  sorts them in priority order; the prefix keeps colliding basenames apart).
* ``embeddings.npy`` + ``embeddings_ids.txt`` - when embeddings are given: row i is the image on line i (float16
  from a pipeline run: a hard link to the cache's file where the filesystem allows, else a copy).

The Label Studio, CVAT, FiftyOne and symlink exports need file paths, so in-memory datasets get none of them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import numpy as np

from elfs.handback.answer import Answer
from elfs.handback.output_files import atomic_write, budget_tag
from elfs.handback.output_files import write_text as _write_text

#: The Label Studio task key holding the image URL (``$image`` in the labelling config, e.g.
#: ``<Image name="img" value="$image"/>``).
LABELSTUDIO_IMAGE_KEY = "image"
#: The Label Studio task key holding the image's absolute path on this machine (for scripts re-rooting the URLs).
LABELSTUDIO_PATH_KEY = "filepath"


@dataclass(frozen=True)
class LabelStudioSetup:
    """Where Label Studio must look for the images: ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` and the Local Files
    storage path(s) of the project. Label Studio refuses a storage whose path equals the document root, so the
    root is one level above the images' common folder and that folder is the one storage. Only when the common
    folder is ``/`` (a list spread over top-level folders) does it take one storage per top-level folder, and an
    image lying directly in ``/`` cannot be served at all (``unservable``)."""

    document_root: str
    storages: tuple[str, ...]
    unservable: tuple[str, ...] = ()

    def start_command(self) -> str:
        """The shell command that starts Label Studio serving these files."""
        return (
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={shlex.quote(self.document_root)} label-studio start"
        )

    def steps(self, task_file: str = "labelstudio_<budget>.json") -> list[str]:
        """The setup as numbered lines a person follows (printed at the end of a run, shown in report.html)."""
        where = " and ".join(self.storages) if self.storages else "(none possible)"
        lines = [
            f"1. start it: {self.start_command()}",
            "2. create a project whose labelling config reads $image, e.g. "
            '<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
            '<Choice value="..."/></Choices></View>',
            f"3. Settings > Cloud Storage > Add Source Storage > Local files, absolute local path {where}"
            + (" (one storage each)" if len(self.storages) > 1 else "")
            + "; save it without syncing (a sync would import every image)",
            f"4. Import > upload {task_file} (the tasks in priority order)",
        ]
        if self.unservable:
            lines.append(
                f"note: {len(self.unservable)} image(s) lie directly in / (e.g. {self.unservable[0]}); Label Studio "
                "serves local files only from a folder below its document root, so move them into a folder"
            )
        return lines


def labelstudio_setup(filepaths: Sequence[str]) -> LabelStudioSetup:
    """The :class:`LabelStudioSetup` for these absolute image paths (one storage unless they share only ``/``)."""
    common = os.path.commonpath([os.path.dirname(p) for p in filepaths])
    parent = os.path.dirname(common)
    if parent != common:  # not the filesystem root: one storage, the common folder
        return LabelStudioSetup(parent, (common,))
    tops, loose = set(), []
    for p in filepaths:
        first = Path(p).parts[1:2]
        if len(Path(p).parts) > 2:
            tops.add(os.path.join(common, first[0]))
        else:
            loose.append(p)
    return LabelStudioSetup(common, tuple(sorted(tops)), tuple(loose))


def document_root(filepaths: Sequence[str]) -> str:
    """``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` for these images (:func:`labelstudio_setup`)."""
    return labelstudio_setup(filepaths).document_root


def labelstudio_url(filepath: str, root: str) -> str:
    """``/data/local-files/?d=<filepath relative to root, URL-quoted>``: how Label Studio serves a local file."""
    rel = Path(os.path.relpath(filepath, root)).as_posix()
    return "/data/local-files/?d=" + quote(rel, safe="/")


def labelstudio_tasks(
    order: Sequence[int],
    *,
    ids: Sequence[str],
    filepaths: Sequence[str],
    pseudo_labels: np.ndarray,
    root: str,
) -> list[dict]:
    """Label Studio tasks for the images ``order`` (indices, priority order): a JSON list, one task per image.

    Each task is ``{"data": {"image": "/data/local-files/?d=<path relative to root>", "filepath": <absolute path>,
    "elfs_id": <id>, "priority": <1-based>, "pseudo_label": <cluster>}}``. Label Studio serves local files only
    when started with serving enabled and a document root above the images, and only from a project with a Local
    Files source storage that holds them and is not the root itself; :func:`labelstudio_setup` gives both paths
    (``root`` is its document root) and :meth:`LabelStudioSetup.steps` the steps, also in selection.json
    (``labelstudio``) and report.html. Serving the files elsewhere (http, S3)? Rewrite ``data.image`` from
    ``data.filepath``.
    """
    pl = np.asarray(pseudo_labels)
    return [
        {
            "data": {
                LABELSTUDIO_IMAGE_KEY: labelstudio_url(filepaths[i], root),
                LABELSTUDIO_PATH_KEY: filepaths[i],
                "elfs_id": ids[i],
                "priority": p,
                "pseudo_label": int(pl[i]),
            }
        }
        for p, i in enumerate((int(j) for j in order), start=1)
    ]


#: The labels a printed CVAT command carries as a placeholder (the user puts theirs, or ``--project_id N``).
CVAT_LABELS_PLACEHOLDER = '[{"name": "object"}]'


def cvat_command(list_file: str, task_name: str, server: str = "http://localhost:8080") -> str:
    """A POSIX ``sh`` command line that creates one CVAT task from ``list_file`` (one path a line), in its order.

    The paths become the arguments with ``read`` (no GNU-only ``xargs -d``/``-a``, and no silent split of a long list
    into several tasks, as xargs would do), and ``--sorting-method predefined`` keeps them in the list's order
    (CVAT sorts by name otherwise). ``cvat-cli`` asks for the password (or reads ``PASS``)."""
    return (
        f'set --; while IFS= read -r f; do set -- "$@" "$f"; done < {shlex.quote(list_file)}; '
        f'cvat-cli --server-host {shlex.quote(server)} --auth USER task create {shlex.quote(task_name)} local "$@" '
        f"--labels {shlex.quote(CVAT_LABELS_PLACEHOLDER)} --sorting-method predefined"
    )


def symlink_name(priority: int, count: int, filepath: str) -> str:
    """``<priority zero-padded to count's width>_<basename>``: unique per budget, sorted in priority order."""
    return f"{priority:0{len(str(count))}d}_{os.path.basename(filepath)}"


def write_symlink_folder(folder: Path, filepaths: Sequence[str]) -> Path:
    """``folder`` holding one symlink per path (in the given order, :func:`symlink_name`), swapped in as a whole.

    Built in a temp folder beside it, then renamed into place; an older folder of the same name is removed after.
    """
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        for p, target in enumerate(filepaths, start=1):
            os.symlink(target, tmp / symlink_name(p, len(filepaths), target))
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _write_json(path: Path, obj: object) -> Path:
    def fill(f: IO[str]) -> None:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")

    return _write_text(path, fill)


def mapped_file(array: np.ndarray) -> Path | None:
    """The .npy file ``array`` is the whole memory map of (what the cache gives for the embeddings), else None."""
    name = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or not name or not str(name).endswith(".npy"):
        return None
    try:
        with open(name, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                return None
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
    except (OSError, ValueError):
        return None
    whole = tuple(shape) == array.shape and dtype == array.dtype and not fortran and array.flags.c_contiguous
    return Path(name) if whole else None


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``array`` as a .npy file; one that is a memory-mapped .npy (the cache's float16 embeddings) becomes a hard link
    to that file, not a second copy on disk, or a copy where the link fails (another filesystem)."""
    source = mapped_file(array)

    def write(tmp: str) -> None:
        if source is not None:
            os.unlink(tmp)
            try:
                os.link(source, tmp)
                return
            except OSError:
                shutil.copyfile(source, tmp)
                return
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    return atomic_write(path, write)


def write_exports(run_dir: Path, answer: Answer) -> list[Path]:
    """Write the exports listed in the module docstring from one checked :class:`Answer`; return their paths.

    Each budget's list follows ``answer.order`` (priority order). ``cvat_<budget>.txt`` has one absolute path per
    line, the files of a CVAT task with resource type ``local`` (uploaded from this machine); :func:`cvat_command`
    is the command that creates that task in the list's order.
    """
    run_dir = Path(run_dir)
    ids, filepaths, order = answer.ids, answer.filepaths, answer.order
    ls = labelstudio_setup(filepaths) if filepaths is not None else None
    out = [_write_json(run_dir / "selection.json", _selection_summary(answer, ls))]
    if filepaths is not None:
        root = ls.document_root
        for b, o in order.items():
            tag = budget_tag(b)
            tasks = labelstudio_tasks(o, ids=ids, filepaths=filepaths, pseudo_labels=answer.clusters, root=root)
            out.append(_write_json(run_dir / f"labelstudio_{tag}.json", tasks))
            lines = "".join(filepaths[int(i)] + "\n" for i in o)
            out.append(_write_text(run_dir / f"cvat_{tag}.txt", lambda f, s=lines: f.write(s)))
        out.append(_write_text(run_dir / "fiftyone_tag.py", lambda f: f.write(FIFTYONE_SCRIPT)))
        for b, o in order.items():
            folder = run_dir / f"selected_{budget_tag(b)}"
            out.append(write_symlink_folder(folder, [filepaths[int(i)] for i in o]))
    if answer.embeddings is not None:
        out.append(_save_npy(run_dir / "embeddings.npy", answer.embeddings))
        lines = "".join(s + "\n" for s in ids)
        out.append(_write_text(run_dir / "embeddings_ids.txt", lambda f: f.write(lines)))
    return out


def _selection_summary(answer: Answer, ls: LabelStudioSetup | None) -> dict[str, Any]:
    """selection.json: the lists per budget (files, ids, indices in priority order) and how to load them."""
    ids, filepaths, method = answer.ids, answer.filepaths, answer.method
    shown = answer.shown
    root = ls.document_root if ls is not None else None
    budgets = []
    for b, o in answer.order.items():
        idx = [int(i) for i in o]
        budgets.append(
            {
                "budget": b,
                "tag": budget_tag(b),
                "beta": answer.beta.get(b),
                "count": len(idx),
                "files": [shown[i] for i in idx],
                "ids": [ids[i] for i in idx],
                "indices": idx,
            }
        )
    return {
        "format": "elfs-selection/1",
        "method": method,
        "score_name": answer.score_name,
        "nested": answer.nested,
        "n_images": len(ids),
        "n_excluded": answer.excluded,  # already labelled (selection.exclude): never proposed
        "paths": "ids" if filepaths is None else "absolute",
        "order": "priority: round robin over pseudo-label clusters (largest kept first), "
        + ("easiest" if method == "easy" else "hardest")
        + " first within a cluster",
        "labelstudio_document_root": root,
        "labelstudio": None
        if ls is None
        else {
            "document_root": ls.document_root,
            "storages": list(ls.storages),
            "start": ls.start_command(),
            "steps": ls.steps(),
        },
        "budgets": budgets,
    }


#: The text of ``fiftyone_tag.py`` (a standalone script: it imports nothing from elfs).
FIFTYONE_SCRIPT = '''"""Tag the images elfs selected in a FiftyOne dataset; set each one's priority, cluster and score.

    pip install fiftyone
    python fiftyone_tag.py                    # dataset "elfs-<run folder>" from every image in selection.csv
    python fiftyone_tag.py --dataset NAME     # an existing dataset whose samples are the same files
    python fiftyone_tag.py --app              # then open the FiftyOne App

It reads selection.json and selection.csv from the folder it is in (written by elfs) and writes, on the samples
that are images of the run: the tag elfs_<budget> and the field elfs_priority_<budget> (1 = label first) on the
selected ones, and elfs_cluster (the pseudo-label) and elfs_score (the run's score, named in selection.json) on
all of them. Samples match by the file they point to, so a dataset built through a symlinked folder matches too.
In the App, filter by the tag and sort by the priority field to see the images in the order elfs suggests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLUSTER_FIELD = "elfs_cluster"
SCORE_FIELD = "elfs_score"


def load_selection(folder=HERE):
    """selection.json as a dict."""
    with open(Path(folder) / "selection.json", encoding="utf-8") as f:
        return json.load(f)


def load_rows(folder=HERE):
    """selection.csv's rows that have a file path (every readable image of the run)."""
    with open(Path(folder) / "selection.csv", newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row["filepath"]]


def all_filepaths(folder=HERE):
    """Every readable image of the run (selection.csv's filepath column)."""
    return [row["filepath"] for row in load_rows(folder)]


def tag_name(budget):
    return "elfs_" + budget["tag"]


def field_name(budget):
    return "elfs_priority_" + budget["tag"].replace(".", "_")


def _key(path):
    """The file a path points to (symlinks resolved), so that the dataset's and elfs's spellings meet."""
    return os.path.realpath(path)


def plan_tags(sample_filepaths, selection):
    """{tag: {sample filepath: priority}} for the samples found, and {tag: [selected files not among them]}."""
    have = {_key(p): p for p in sample_filepaths}
    plan, missing = {}, {}
    for budget in selection["budgets"]:
        found = {}
        for priority, path in enumerate(budget["files"], start=1):
            if _key(path) in have:
                found[have[_key(path)]] = priority
            else:
                missing.setdefault(tag_name(budget), []).append(path)
        plan[tag_name(budget)] = found
    return plan, missing


def plan_fields(sample_filepaths, rows):
    """({sample filepath: cluster}, {sample filepath: score}) for the samples that are images of the run."""
    have = {_key(p): p for p in sample_filepaths}
    cluster, score = {}, {}
    for row in rows:
        p = have.get(_key(row["filepath"]))
        if p is not None:
            cluster[p] = int(row["pseudo_label"])
            score[p] = float(row["score"])
    return cluster, score


def tag_dataset(dataset, selection, rows=None):
    """Tag the selected samples of ``dataset``, set their priority, and every matched sample's cluster and score;
    return {tag: samples tagged}."""
    sample_paths = dataset.values("filepath")
    plan, missing = plan_tags(sample_paths, selection)
    fields = {tag_name(b): field_name(b) for b in selection["budgets"]}
    for tag, found in plan.items():
        if not found:
            continue
        view = dataset.select_by("filepath", list(found))
        view.tag_samples(tag)
        dataset.set_values(fields[tag], found, key_field="filepath")
    cluster, score = plan_fields(sample_paths, load_rows() if rows is None else rows)
    if cluster:
        dataset.set_values(CLUSTER_FIELD, cluster, key_field="filepath")
        dataset.set_values(SCORE_FIELD, score, key_field="filepath")
    for tag, paths in missing.items():
        print(f"{tag}: {len(paths)} selected file(s) not in the dataset, e.g. {paths[0]}")
    score_name = selection.get("score_name")
    print(f"{dataset.name}: {CLUSTER_FIELD}, {SCORE_FIELD} ({score_name}) set on {len(cluster)} sample(s)")
    return {tag: len(found) for tag, found in plan.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="an existing FiftyOne dataset to tag (default: create one)")
    parser.add_argument("--app", action="store_true", help="open the FiftyOne App afterwards")
    args = parser.parse_args(argv)

    import fiftyone as fo

    selection = load_selection()
    if args.dataset:
        dataset = fo.load_dataset(args.dataset)
    else:
        name = "elfs-" + HERE.name
        if fo.dataset_exists(name):
            dataset = fo.load_dataset(name)
        else:
            dataset = fo.Dataset.from_images(all_filepaths(), name=name, persistent=True)
    for tag, count in tag_dataset(dataset, selection).items():
        print(f"{dataset.name}: tagged {count} sample(s) {tag}")
    if args.app:
        fo.launch_app(dataset).wait()


if __name__ == "__main__":
    main()
'''


__all__ = [
    "CVAT_LABELS_PLACEHOLDER",
    "FIFTYONE_SCRIPT",
    "LABELSTUDIO_IMAGE_KEY",
    "LABELSTUDIO_PATH_KEY",
    "LabelStudioSetup",
    "cvat_command",
    "document_root",
    "labelstudio_setup",
    "labelstudio_tasks",
    "labelstudio_url",
    "symlink_name",
    "write_exports",
    "write_symlink_folder",
]
