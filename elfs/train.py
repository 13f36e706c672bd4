"""`python -m elfs.train` is the `elfs` command (elfs/cli/main.py); one job is :func:`elfs.run.run`."""

from elfs.cli.main import cli

if __name__ == "__main__":
    cli()
