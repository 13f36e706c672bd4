from elfs.api import cli

cli()
