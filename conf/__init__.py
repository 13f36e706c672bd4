"""Hydra configs, installed as the package `elfs.conf` (see pyproject.toml) and read by `pkg://elfs.conf`."""
