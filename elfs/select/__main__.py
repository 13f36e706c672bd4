"""`python -m elfs.select` is the `elfs-select` command (elfs/cli/select.py)."""

from elfs.cli.select import cli

cli()
