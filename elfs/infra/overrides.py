"""The command line as Hydra should see it: `+experiment=X` and `experiment=X` both work, and two environment
overlays (ELFS_SMOKE=1, ELFS_PLAN=1) shrink or dry-run any command without editing its words.

Imports nothing heavy (no torch, no Hydra), so the console scripts can call it before deciding what to load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

SMOKE_ENV = "ELFS_SMOKE"  # =1: add debug=smoke (CPU-sized data and step counts) unless the command sets debug
PLAN_ENV = "ELFS_PLAN"  # =1: add plan=true (print what every job would compute and cost, then exit)
# Groups that sit in conf/config.yaml's defaults list as `NAME: null`: Hydra refuses `+NAME=X` for them, so the
# documented `+experiment=X` form of earlier versions is mapped onto `experiment=X`.
NULL_DEFAULT_GROUPS = ("experiment", "debug", "hparams_search")


def override_key(arg: str) -> str | None:
    """The key of a `key=value` / `+key=value` / `~key` override, or None for a flag or a positional word."""
    if arg.startswith("-"):
        return None
    body = arg.lstrip("+~")
    if "=" in body:
        return body.split("=", 1)[0]
    return body if arg.startswith("~") else None


def user_overrides(args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``args`` with `+<group>=X` turned into `<group>=X` for the null-default groups, then `debug=smoke` and
    `plan=true` appended when ELFS_SMOKE=1 / ELFS_PLAN=1 and the command does not set them itself."""
    env = os.environ if env is None else env
    out = []
    for arg in args:
        for group in NULL_DEFAULT_GROUPS:
            if arg.startswith(f"+{group}=") and not arg.startswith("++"):
                arg = arg[1:]
        out.append(arg)
    keys = {override_key(a) for a in out}
    if env.get(SMOKE_ENV) == "1" and "debug" not in keys:
        out.append("debug=smoke")
    if env.get(PLAN_ENV) == "1" and "plan" not in keys:
        out.append("plan=true")
    return out


def wants_plan(args: Sequence[str]) -> bool:
    """Whether the (already overlaid) overrides ask for plan mode: `plan=true` (any YAML spelling of true)."""
    values = [a.split("=", 1)[1].strip().lower() for a in args if override_key(a) == "plan" and "=" in a]
    return bool(values) and values[-1] in ("true", "yes", "on", "1")


def is_multirun(args: Sequence[str]) -> bool:
    """Whether Hydra will run these arguments as a sweep (`-m`, `--multirun`, or `hydra.mode=MULTIRUN`)."""
    return any(a in ("-m", "--multirun") or a.replace(" ", "") == "hydra.mode=MULTIRUN" for a in args)


def apply_debug_mode(cfg):
    """Under ``debug=<name>`` (conf/debug/, merged after any experiment by the defaults list), streamed images are
    decoded at the backbone's debug size too, so an ImageNet proxy trains on small images. Idempotent."""
    from omegaconf import DictConfig

    if not isinstance(cfg, DictConfig) or not cfg.get("debug"):
        return cfg
    out = cfg.copy()
    size = out.backbone.image_size
    for key in ("dynamics", "evaluate"):
        if out[key].image_size is not None and size is not None:
            out[key].image_size = size
    return out
