"""A rank started by rank 0's session (elfs/launch): ``python -m elfs.cli.rank CONFIG.json`` runs that resolved job."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path


def _orphan_guard() -> None:
    """A rank started by rank 0 exits when rank 0 is gone (it would otherwise wait in a collective forever)."""
    parent = os.getppid()

    def check() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=check, daemon=True, name="elfs-orphan-guard").start()


def worker_main(argv: list[str]) -> None:
    """Entry of a rank started by rank 0: run the job in ``argv[0]`` (its resolved config) quietly."""
    from omegaconf import OmegaConf

    from elfs.config import ElfsConfig
    from elfs.errors import UserError
    from elfs.run import run

    _orphan_guard()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: rank 0 handles it
    warnings.simplefilter("ignore")  # rank 0 prints the same warnings
    tag = f"rank {os.environ.get('RANK', '?')}"
    logging.basicConfig(level=logging.WARNING, format=f"[{tag}] %(levelname)s %(name)s: %(message)s")
    cfg = OmegaConf.merge(OmegaConf.structured(ElfsConfig), OmegaConf.create(Path(argv[0]).read_text()))
    try:
        run(cfg)
    except UserError as e:  # rank 0 reports the same error to the user; this line says which rank saw it
        print(f"elfs [{tag}]: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
