"""A sweep job's folder name (and W&B run name): one short, readable path component, whatever the overrides.

Hydra's default names a job's folder after all its overrides joined together, so a path override nests the
folder one level per path component and a long sweep passes the 255-byte limit on a file name. Here the name is
the job number and the values the sweep varies (`3_selection.budget=0.1,selection=ccs`: the keys given a list on
the command line or in the experiment's hydra.sweeper.params, read from the sweep's multirun.yaml, which Hydra's
sweeper writes before any job starts; all of the job's overrides where that file says nothing), with every path
reduced to its file name, no separator a filesystem refuses, and at most ``MAX_BYTES``: what does not fit is
counted (``+N``). The full overrides stay in the job's ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path

#: the separator conf/hydra/default.yaml gives Hydra between overrides in hydra.job.override_dirname: a character
#: no override contains, so the list can be split back (a value may hold commas: `selection.baselines=[a,b]`)
ITEM_SEP = "\x1f"
#: bytes of a job's name at most (UTF-8); far under the 255-byte limit of common filesystems
MAX_BYTES = 160
#: bytes of one value at most before it is shortened with a hash of it
MAX_VALUE_BYTES = 48
_PATH_DIRS = re.compile(r"[^,\[\]{}()=:'\"]*/")  # the folders of every path in a value: 'a/b/c.npz' -> 'c.npz'
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def _short_value(value: str) -> str:
    value = _UNSAFE.sub("_", _PATH_DIRS.sub("", value.rstrip("/")) or value.strip("/"))
    raw = value.encode()
    if len(raw) <= MAX_VALUE_BYTES:
        return value
    import hashlib

    digest = hashlib.sha1(raw).hexdigest()[:6]
    return raw[: MAX_VALUE_BYTES - 8].decode(errors="ignore") + "~" + digest


def swept_keys(sweep_dir: str | Path | None) -> set[str] | None:
    """The keys a sweep varies (a list, range or choice on its command line or in hydra.sweeper.params), from the
    multirun.yaml in ``sweep_dir``; None where there is none to read."""
    if not sweep_dir:
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        saved = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        params = saved.hydra.sweeper.get("params") or {}
        lines = [str(o) for o in saved.hydra.overrides.task] + [f"{k}={v}" for k, v in params.items()]
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception:  # no such file (a plan, a sweeper that writes none), or one that does not parse: show all
        return None
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def job_name(num: int | str, override_dirname: str, sweep_dir: str | None = None, *, kv_sep: str = "=") -> str:
    """``<num>_<key=value,...>`` from Hydra's override_dirname (items joined by ITEM_SEP), only the swept keys
    where ``sweep_dir``'s multirun.yaml names them: paths reduced to their file name, long values shortened, at
    most MAX_BYTES bytes, never a path separator. ``<num>`` alone without overrides."""
    swept = swept_keys(sweep_dir)
    items = []
    for item in filter(None, str(override_dirname).split(ITEM_SEP)):
        key, sep, value = item.partition(kv_sep)
        if swept is not None and key.lstrip("+~") not in swept:
            continue
        items.append(_UNSAFE.sub("_", key) + sep + _short_value(value) if sep else _short_value(item))
    name = str(num)
    for i, item in enumerate(items):
        sep = "_" if i == 0 else ","
        rest = len(items) - i - 1
        tail = f",+{rest}" if rest else ""
        if len((name + sep + item + tail).encode()) > MAX_BYTES:
            return name + ("_" if i == 0 else ",") + f"+{len(items) - i}"
        name += sep + item
    return name
