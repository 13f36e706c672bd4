"""``report.html``: the one page to open after a selection run.

Self-contained: CSS inline, thumbnails inlined as base64 PNG, and every other link relative to a file inside the
run folder (the plots, the lists, the ``selected_<budget>/`` symlinks), never an absolute path, so the folder can
be moved or zipped. It shows the budget table (budget, beta, count, the files to hand on), the plots written by
:func:`selection_report.write_selection_outputs`, and per budget the kept images grouped by cluster in priority
order, capped (:data:`THUMBS_PER_CLUSTER`, :data:`CLUSTERS_SHOWN`, :data:`MAX_THUMBS`) with a note saying how many
are not shown, so the page stays light with thousands of images.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from elfs.handback.answer import Answer
from elfs.handback.output_files import budget_tag, thumbnail
from elfs.handback.output_files import write_text as _write_text

#: Thumbnails shown per cluster and budget (the first ones in priority order).
THUMBS_PER_CLUSTER = 10
#: Clusters shown per budget (in the round robin's visit order: most kept first).
CLUSTERS_SHOWN = 40
#: Thumbnails in the whole page (each a few kB inline); past it, the images are listed by name only.
MAX_THUMBS = 1000
#: Thumbnail edge in pixels (shown at this size, not scaled).
THUMB_PX = 80
#: Names listed per cluster when there are no thumbnails.
NAMES_PER_CLUSTER = 12

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:34px 0 8px;border-bottom:1px solid #d5d9de;
padding-bottom:4px}h3{font-size:15px;margin:22px 0 6px}
.sub{color:#5b6570;margin:0 0 14px}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #d5d9de;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
.note{color:#5b6570;font-size:13px}
.plots{display:flex;flex-wrap:wrap;gap:0 24px;align-items:flex-start}.plots>div{flex:1 1 480px;min-width:0}
.plots>div.wide{flex-basis:100%}
.plots img{max-width:100%;height:auto;background:#fff;border:1px solid #d5d9de;margin:6px 0 14px;display:block}
.howto{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:6px 14px;font-size:13px}
.howto li{margin:3px 0}
.cluster{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:8px 10px;margin:8px 0}
.cluster .head{font-size:13px;margin-bottom:6px}.cluster .head b{font-size:14px}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;width:96px;text-align:center}
figure img{width:80px;height:80px;background:#fff;border:1px solid #e1e4e8;display:block;margin:0 auto}
figcaption{font-size:11px;line-height:1.25;color:#5b6570;overflow-wrap:anywhere;margin-top:2px}
figcaption b{color:#1d232a}
ol.names{margin:2px 0;padding-left:26px;font-size:12px;columns:2}
.warn{background:#fff8e1;border:1px solid #e0c060;border-radius:6px;padding:8px 12px}
code{background:#eef0f3;padding:1px 4px;border-radius:3px;font-size:12px}
"""


def _href(rel: str) -> str:
    """A relative link to a file in the run folder, each path segment URL-quoted (spaces, '#', unicode)."""
    return html.escape(quote(rel, safe="/"), quote=True)


def _thumb_uri(img: object, index: int) -> str:
    """A :data:`THUMB_PX` square PNG (aspect kept, padded white) as a data: URI."""
    from PIL import Image

    pil = Image.fromarray(thumbnail(img, index, THUMB_PX))  # checked: a uint8 HxW or HxWx3/4 image
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(img: object, index: int) -> str:
    """An image as the report's thumbnail data: URI (for sections other modules write)."""
    return _thumb_uri(img, index)


def cluster_groups(pseudo_labels: np.ndarray, order: np.ndarray) -> list[tuple[int, list[int]]]:
    """``(cluster, its kept indices in priority order)`` per cluster, in the order the round robin visits them."""
    pl = np.asarray(pseudo_labels)
    groups: dict[int, list[int]] = {}
    for i in np.asarray(order, dtype=np.int64).tolist():
        groups.setdefault(int(pl[i]), []).append(i)  # first appearance = visit order
    return list(groups.items())


#: The labelling config's start the report shows: Label Studio's tasks name their image ``$image``.
LABELSTUDIO_CONFIG_HINT = '<View><Image name="image" value="$image"/>…</View>'
#: A cluster holding fewer than this fraction of an even share (N / clusters) counts as tiny.
TINY_SHARE = 0.2


def cluster_size_note(pseudo_labels: np.ndarray, num_clusters: int) -> str | None:
    """One sentence saying how many of the ``num_clusters`` requested clusters came out empty or tiny (under
    :data:`TINY_SHARE` of an even share, at least 2 images), and what to try; None when none did."""
    sizes = np.bincount(np.asarray(pseudo_labels, dtype=np.int64), minlength=num_clusters)
    n = int(sizes.sum())
    tiny_below = max(2, int(np.ceil(TINY_SHARE * n / num_clusters)))
    empty = int((sizes == 0).sum())
    tiny = int(((sizes > 0) & (sizes < tiny_below)).sum())
    if not empty and not tiny:
        return None
    found = []
    if empty:
        found.append(f"{empty} came out empty")
    if tiny:
        found.append(f"{tiny} hold fewer than {tiny_below} images")
    real = num_clusters - empty - tiny
    return (
        f"Of the {num_clusters} clusters requested for {n:,} images, {' and '.join(found)}: the encoder tells "
        f"about {real} kinds of images apart here. The lists stay valid (they go round the clusters that have "
        f"images). To try: --clusters {max(real, 1)} (cluster.num_clusters) if that matches the kinds you expect; "
        "if you expect more kinds, a stronger encoder (backbone=dino_vits16 or backbone=timm, see docs/usage.md); "
        "contact_sheet.png shows what each cluster holds."
    )


def _link_if(run_dir: Path, rel: str, text: str | None = None) -> str:
    if not (run_dir / rel).exists():
        return "—"
    return f'<a href="{_href(rel)}">{html.escape(text or rel)}</a>'


def write_report_html(
    run_dir: Path,
    answer: Answer,
    *,
    load_image: Callable[[int], np.ndarray] | None = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write ``run_dir/report.html`` (atomically) from one checked :class:`Answer` and the files already in
    ``run_dir``; return its path. ``sections``: further HTML sections (e.g. the near-duplicate groups), added
    after the budgets."""
    run_dir = Path(run_dir)
    parts = _head(run_dir, answer) + _budget_table(run_dir, answer) + _howto(answer) + _plots(run_dir, answer)
    parts += _budget_sections(run_dir, answer, load_image)
    parts.extend(sections)  # further sections (near-duplicates), written by their own modules
    parts.append("</main></body></html>\n")
    text = "".join(parts)
    return _write_text(run_dir / "report.html", lambda f: f.write(text))


def _head(run_dir: Path, a: Answer) -> list[str]:
    """The page's head, title line and the note on the clusters' sizes."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>elfs selection: {esc(run_dir.name)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>Which images to annotate: {esc(run_dir.name)}</h1>",
        f"<p class='sub'>{a.n:,} images, {a.num_clusters} pseudo-label clusters, method "
        f"<b>{esc(a.method or 'unknown')}</b> ranking by <b>{esc(a.score_name)}</b>; "
        f"{len(a.skipped)} unreadable file(s) skipped ({_link_if(run_dir, 'skipped.csv')}). No label was used.</p>",
    ]
    note = cluster_size_note(a.clusters, a.num_clusters)
    if note is not None:
        parts.append(f"<p class='warn' id='cluster-note'><b>Clusters:</b> {esc(note)}</p>")
    return parts


def _budget_table(run_dir: Path, a: Answer) -> list[str]:
    """The budgets: beta, count and the files to hand on, then the other files of the folder."""
    esc = html.escape
    parts: list[str] = []
    add = parts.append
    add("<h2>Budgets</h2>")
    add(
        "<p class='note'>Each list is in <b>priority order</b>: round robin over the clusters (most kept images "
        f"first), {'easiest' if a.easy_first else 'hardest'} kept image first within a cluster. Annotating only the "
        "first lines of a list still covers every cluster.</p>"
    )
    add(
        "<table><tr><th>budget</th><th>beta</th><th>images to annotate</th><th>list</th><th>Label Studio</th>"
        "<th>CVAT</th><th>files</th></tr>"
    )
    for b, o in a.order.items():
        tag = budget_tag(b)
        be = a.beta.get(b)
        folder = f"selected_{tag}"
        add(
            f"<tr><td class='num'>{esc(tag)}</td><td class='num'>{'—' if be is None else f'{be:g}'}</td>"
            f"<td class='num'>{len(o):,}</td><td>{_link_if(run_dir, f'annotate_{tag}.txt')}</td>"
            f"<td>{_link_if(run_dir, f'labelstudio_{tag}.json')}</td><td>{_link_if(run_dir, f'cvat_{tag}.txt')}</td>"
            f"<td>{_link_if(run_dir, folder, folder + '/') if (run_dir / folder).is_dir() else '—'}</td></tr>"
        )
    add("</table>")
    others = [
        ("selection.csv", "every image: cluster, score, rank, kept and priority per budget"),
        ("selection.json", "the lists per budget, for scripts"),
        ("fiftyone_tag.py", "run with FiftyOne installed to tag the selected samples"),
        ("embeddings.npy", "the embeddings (float16), one row per line of embeddings_ids.txt"),
    ]
    items = [f"<li>{_link_if(run_dir, name)}: {esc(what)}</li>" for name, what in others if (run_dir / name).exists()]
    add("<p class='note'>Also in this folder:</p><ul class='note'>" + "".join(items) + "</ul>")
    return parts


def _howto(a: Answer) -> list[str]:
    """How to hand a list to Label Studio, CVAT, FiftyOne (only when the images are files)."""
    if a.filepaths is None:
        return []
    from elfs.handback.exports import cvat_command, labelstudio_setup

    esc, setup = html.escape, labelstudio_setup(a.filepaths)
    first = budget_tag(next(iter(a.order)))
    storages = " and ".join(f"<code>{esc(st)}</code>" for st in setup.storages) or "(none possible)"
    ls_steps = (
        f"<li>start it: <code>{esc(setup.start_command())}</code></li>"
        "<li>create a project whose labelling config reads <code>$image</code>, e.g. "
        f"<code>{esc(LABELSTUDIO_CONFIG_HINT)}</code></li>"
        f"<li>Settings → Cloud Storage → Add Source Storage → Local files, absolute local path {storages}; "
        "save it without syncing (a sync would import every image)</li>"
        f"<li>Import → upload <code>labelstudio_{esc(first)}.json</code> (the tasks arrive in priority order)</li>"
    )
    if setup.unservable:
        ls_steps += f"<li>{esc(setup.steps()[-1])}</li>"
    return [
        "<div class='howto'><b>Handing a list to a labelling tool</b> (commands run in this folder)<ul>"
        f"<li><b>Label Studio</b>:<ol>{ls_steps}</ol></li>"
        f"<li><b>CVAT</b> (POSIX sh; put your server, user and labels or <code>--project_id N</code>): "
        f"<code>{esc(cvat_command(f'cvat_{first}.txt', f'elfs {first}'))}</code>; or upload the files of "
        "<code>selected_&lt;budget&gt;/</code> in the web UI with sorting method <i>predefined</i>.</li>"
        "<li><b>FiftyOne</b>: <code>python fiftyone_tag.py --app</code> tags the samples "
        "<code>elfs_&lt;budget&gt;</code> and sets their priority, cluster and score.</li>"
        "<li><b>Anything else</b>: <code>annotate_&lt;budget&gt;.txt</code> has one absolute path per line.</li>"
        "</ul></div>"
    ]


def _plots(run_dir: Path, a: Answer) -> list[str]:
    """The plots written beside the page (those that exist)."""
    esc = html.escape
    parts: list[str] = []
    add = parts.append
    add("<h2>Plots</h2><div class='plots'>")
    wide = a.num_clusters > 30  # the coverage plot grows with the clusters
    for name, what, cls in (
        ("score_histogram.png", "Hardness of every image, with each budget's cuts", ""),
        ("cluster_coverage.png", "Share of each cluster in the whole set and in each coreset", "wide" if wide else ""),
        ("contact_sheet.png", "Kept images of the smallest budget, up to 8 per cluster, easy to hard", "wide"),
    ):
        if (run_dir / name).exists():
            add(f"<div class='{cls}'><h3>{esc(what)}</h3><img src='{_href(name)}' alt='{esc(name)}'></div>")
    add("</div>")

    return parts


def _budget_sections(run_dir: Path, a: Answer, load_image: Callable[[int], np.ndarray] | None) -> list[str]:
    """Per budget, the kept images grouped by cluster in priority order: thumbnails while they last, then names."""
    from elfs.handback.exports import symlink_name

    esc = html.escape
    ids, filepaths = a.ids, a.filepaths
    totals = np.bincount(a.clusters, minlength=a.num_clusters)
    parts: list[str] = []
    add = parts.append
    cache: dict[int, str] = {}
    shown_total = 0
    for b, o in a.order.items():
        tag = budget_tag(b)
        folder = run_dir / f"selected_{tag}"
        prio = {int(i): p for p, i in enumerate(np.asarray(o).tolist(), start=1)}
        groups = cluster_groups(a.clusters, o)
        add(f"<h2>Budget {esc(tag)}: {len(o):,} images in {len(groups)} clusters</h2>")
        add(
            f"<p class='note'>The whole list, in this order: {_link_if(run_dir, f'annotate_{tag}.txt')}. "
            "Numbers are the place in that list.</p>"
        )
        hidden_clusters = len(groups) - min(len(groups), CLUSTERS_SHOWN)
        for c, members in groups[:CLUSTERS_SHOWN]:
            head = f"<b>cluster {c}</b> — {len(members):,} kept of {int(totals[c]):,} images"
            thumbs = load_image is not None and shown_total < MAX_THUMBS
            cap = THUMBS_PER_CLUSTER if thumbs else NAMES_PER_CLUSTER
            if thumbs:
                cap = min(cap, MAX_THUMBS - shown_total)
            pick = members[:cap]
            more = len(members) - len(pick)
            head += f"; the first {len(pick)} in priority order" + (f", {more:,} more not shown" if more else "")
            add(f"<div class='cluster'><div class='head'>{head}</div>")
            if thumbs:
                add("<div class='thumbs'>")
                for i in pick:
                    if i not in cache:
                        cache[i] = _thumb_uri(load_image(i), i)
                    label = esc(os.path.basename(ids[i]) if filepaths is not None else ids[i])
                    img = f"<img src='{cache[i]}' alt='{label}'>"
                    if filepaths is not None and folder.is_dir():
                        rel = f"selected_{tag}/{symlink_name(prio[i], len(o), filepaths[i])}"
                        img = f"<a href='{_href(rel)}'>{img}</a>"
                    cap = f"<figcaption><b>{prio[i]}</b> {label}</figcaption>"
                    add(f"<figure title='{esc(ids[i])}'>{img}{cap}</figure>")
                add("</div>")
                shown_total += len(pick)
            else:
                add("<ol class='names'>" + "".join(f"<li value='{prio[i]}'>{esc(ids[i])}</li>" for i in pick) + "</ol>")
            add("</div>")
        if hidden_clusters:
            add(
                f"<p class='note'>{hidden_clusters} more cluster(s) with kept images are not shown; "
                "selection.csv and the lists above hold every image.</p>"
            )
    if load_image is not None and shown_total >= MAX_THUMBS:
        add(f"<p class='note'>Thumbnails stop after {MAX_THUMBS:,}; later clusters list names only.</p>")
    return parts


__all__ = [
    "CLUSTERS_SHOWN",
    "MAX_THUMBS",
    "THUMBS_PER_CLUSTER",
    "TINY_SHARE",
    "cluster_groups",
    "cluster_size_note",
    "thumbnail_uri",
    "write_report_html",
]
