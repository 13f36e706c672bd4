"""Progress output: tqdm bars on a terminal (a real pty here), plain rate-limited lines in a log file."""

from __future__ import annotations

import io
import os
import pty

import lightning as L
import numpy as np
import pytest

from elfs.infra.progress import EpochProgress, PlainProgress, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_progress_writes_rate_limited_lines_without_carriage_returns():
    out, clock = io.StringIO(), _Clock()
    with PlainProgress(4000, "embed[x]", unit="img", every_s=10, stream=out, clock=clock) as bar:
        for _ in range(40):  # 100 images a second for 40 s
            clock.t += 1.0
            bar.update(100)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "embed[x]: 1000/4000 (25%), 100 img/s, 30s left"
    assert len(lines) == 4 and lines[-1] == "embed[x]: 4000/4000 (100%), 100 img/s, done in 40s"


def test_progress_bar_is_tqdm_on_a_terminal_and_plain_elsewhere():
    from tqdm.auto import tqdm

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            bar = progress_bar(3, "t", stream=tty)
            assert isinstance(bar, tqdm)
            bar.close()
    finally:
        os.close(master)
    assert isinstance(progress_bar(3, "t", stream=io.StringIO()), PlainProgress)
    silent = progress_bar(3, "t", enabled=False)
    silent.update(2)
    silent.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_epoch_progress_in_a_real_fit():
    """One line per epoch (every_s=0) with epoch, step, rate and time left; the last says done."""
    from elfs.config import ClassifierTrainingConfig
    from elfs.dynamics import train_classifier
    from elfs.infra.runtime import Runtime

    out = io.StringIO()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    cfg = ClassifierTrainingConfig(model="mlp", width=8, batch_size=16, lr=0.05)
    train_classifier(
        x,
        y,
        np.arange(64),
        cfg,
        num_classes=2,
        epochs=3,
        seed=0,
        runtime=Runtime(trainer_kwargs={"callbacks": [EpochProgress("proxy", every_s=0, stream=out)]}),
    )
    lines = out.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["proxy: epoch 1/3", "proxy: epoch 2/3", "proxy: epoch 3/3"]
    assert "step 4/12" in lines[0] and "steps/s" in lines[0] and lines[0].endswith("left")
    assert lines[-1].endswith("done")
    assert isinstance(EpochProgress("x"), L.Callback)
