"""W&B's offline run file read back as W&B reads it: record by record, with wandb's own protobuf schema.

An offline run writes `offline-run-*/run-*.wandb`: every record W&B would upload. The file is a 7-byte header
(`:W&B`, a 2-byte magic, a version byte), then a LevelDB-style log in 32 KiB blocks: each chunk has a 7-byte header
(CRC32C, little-endian length, type 1 full / 2 first / 3 middle / 4 last), a block's tail under 7 bytes is zero
padding, and a record split over blocks is the concatenation of its first, middle and last chunks. Each record
parses as `wandb.proto.wandb_internal_pb2.Record`. wandb ships no reader of its own for it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """Every record of one .wandb file, in order (wandb_internal_pb2.Record)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is no W&B run file (starts {data[:7]!r})"
    pos, partial = HEADER, None
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # a block's tail too short for a chunk header: padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += (BLOCK - pos % BLOCK) % BLOCK
            continue
        chunk, pos = data[pos : pos + length], pos + length
        assert len(chunk) == length, f"{path}: a chunk of {length} bytes runs past the end of the file"
        if kind == FULL:
            assert partial is None, f"{path}: a full record inside a split one"
            yield _parse(pb, chunk)
        elif kind == FIRST:
            partial = chunk
        elif kind == MIDDLE:
            assert partial is not None, f"{path}: a middle chunk without a first"
            partial += chunk
        elif kind == LAST:
            assert partial is not None, f"{path}: a last chunk without a first"
            yield _parse(pb, partial + chunk)
            partial = None
        else:
            raise AssertionError(f"{path}: unknown chunk type {kind} at byte {pos - length - HEADER}")


def _parse(pb: Any, raw: bytes) -> Any:
    r = pb.Record()
    r.ParseFromString(raw)
    return r


def read_run(path: Path) -> dict[str, Any]:
    """What W&B shows of one run: its run record, config (key -> value), summary (key -> value), history rows
    (each a dict; a media value such as a table is its nested keys, e.g. row['results']['_type']), the metric
    definitions (key -> step metric) and the artifacts (name -> (type, metadata, files))."""
    out: dict[str, Any] = {"run": None, "config": {}, "summary": {}, "history": [], "metrics": {}, "artifacts": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"] |= {u.key: json.loads(u.value_json) for u in r.run.config.update}
        elif kind == "config":
            out["config"] |= {u.key: json.loads(u.value_json) for u in r.config.update}
        elif kind == "summary":
            for u in r.summary.update:
                key = u.key or "/".join(u.nested_key)
                out["summary"][key] = json.loads(u.value_json)
        elif kind == "history":
            row: dict[str, Any] = {}
            for u in r.history.item:
                if u.key or len(u.nested_key) == 1:  # a plain value (wandb 0.31 puts its key in nested_key)
                    row[u.key or u.nested_key[0]] = json.loads(u.value_json)
                else:  # a media value: (name, field, ...) -> value
                    row.setdefault(u.nested_key[0], {})["/".join(u.nested_key[1:])] = json.loads(u.value_json)
            out["history"].append(row)
        elif kind == "metric":
            m = r.metric
            out["metrics"][m.name or m.glob_name] = m.step_metric
        elif kind == "artifact":
            a = r.artifact
            files = {e.path for e in a.manifest.contents}
            out["artifacts"][a.name] = (a.type, json.loads(a.metadata) if a.metadata else {}, files)
    return out


def curve(run: dict[str, Any], key: str, x_key: str) -> list[tuple[float, float]]:
    """The (x, y) points of one panel: the history rows that hold both ``key`` and its x axis ``x_key``."""
    return [(row[x_key], row[key]) for row in run["history"] if key in row and x_key in row]
