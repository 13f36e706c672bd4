"""The commands wing: what reads argv and picks exit codes. `elfs` (main.py), `elfs-select` (select.py) and a rank
started by rank 0 (rank.py); each runs :func:`elfs.run.run`. Nothing below imports this package."""
