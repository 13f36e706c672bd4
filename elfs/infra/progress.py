"""Progress that suits where it is written: tqdm bars on a terminal, plain lines in a log file.

A SLURM log (or any redirected stderr) gets no carriage-return bar noise: a long stage prints one plain line at
most every ``every_s`` seconds and one when it ends, naming the stage, the step, the rate and the time left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

import lightning as L


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal that can redraw a bar."""
    s = sys.stderr if stream is None else stream
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class PlainProgress:
    """A tqdm-like counter (``update``, ``close``, context manager) that writes one plain line at most every
    ``every_s`` seconds and a last one on close: ``embed[x]: 1200/4000 (30%), 310 img/s, 9s left``."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        every_s: float = 10.0,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.every_s = int(total), desc, unit, float(every_s)
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.n = 0
        self.start = self.last = clock()
        self.closed = False

    def _line(self, final: bool) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.n / elapsed
        head = f"{self.desc}: {self.n}/{self.total}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        if final:
            return f"{head}, {rate:.3g} {self.unit}/s, done in {_duration(elapsed)}"
        left = (self.total - self.n) / rate if rate > 0 and self.total else float("nan")
        return f"{head}, {rate:.3g} {self.unit}/s, {_duration(left) if left == left else '?'} left"

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self.clock()
        if now - self.last >= self.every_s and self.n < self.total:
            self.last = now
            self._write(self._line(final=False))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(self._line(final=True))

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent:
    """No progress output at all (``progress=false``)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(
    total: int,
    desc: str,
    *,
    unit: str = "it",
    enabled: bool = True,
    every_s: float = 10.0,
    stream: IO[str] | None = None,
    leave: bool = True,
):
    """A tqdm bar on a terminal, :class:`PlainProgress` lines elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return _Silent()
    if is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, leave=leave)
    return PlainProgress(total, desc, unit=unit, every_s=every_s, stream=stream)


class EpochProgress(L.Callback):
    """For a Trainer writing to a log file: one plain line per epoch, at most every ``every_s`` seconds, plus the
    last epoch: ``dynamics: epoch 3/12, step 96/384, 41.2 steps/s, 7s left``."""

    def __init__(
        self,
        stage: str,
        every_s: float = 10.0,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self.every_s, self.clock = stage, float(every_s), clock
        self.stream = sys.stderr if stream is None else stream
        self.start = self.last = 0.0
        self.first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.last = self.clock()
        self.first_step = int(trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        now = self.clock()
        total = trainer.estimated_stepping_batches
        step = int(trainer.global_step)
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        done = last_epoch or (isinstance(total, int) and step >= total)
        if now - self.last < self.every_s and not done:
            return
        self.last = now
        rate = (step - self.first_step) / max(now - self.start, 1e-9)
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        total_txt = f"/{int(total)}" if total != float("inf") else ""
        left = (int(total) - step) / rate if rate > 0 and total != float("inf") else float("nan")
        tail = "done" if done else (f"{_duration(left)} left" if left == left else "? left")
        self.stream.write(
            f"{self.stage}: epoch {trainer.current_epoch + 1}{epochs}, step {step}{total_txt}, "
            f"{rate:.3g} steps/s, {tail}\n"
        )
        self.stream.flush()
