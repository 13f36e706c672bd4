"""No host sync in the steady-state training step (classifier and TEMI): between the start of step K and the start of
step M, nothing in the training code or in Lightning's per-step logging / progress bar turns a tensor into a Python
value (``.item()``, ``float()``, ``int()``, ``bool()``, ``.cpu()``, ``.tolist()``, ``.numpy()``), nor ships a host
number to the device (``torch.tensor(x, device=...)``, as ``self.log(name, float)`` does: a blocking copy on a
GPU). On a GPU, experiments/gpu_check.py runs the same window under ``torch.cuda.set_sync_debug_mode("error")``.

Lightning's own conversion of the logged tensors when it writes the logs (every ``log_every_n_steps``) is allowed.
Calls made inside torch itself are not counted: the optimizers read their step counters (CPU tensors by design)
with ``.item()``. Nor are the recorder's value-range checks, which run only when its state lives on the CPU."""

from __future__ import annotations

import traceback

import lightning as L
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_METHODS = ("item", "__float__", "__int__", "__bool__", "cpu", "tolist", "numpy")
_EXEMPT = ("/torch/", "elfs/training/recorder.py")


class SyncCounter(L.Callback):
    """Counts host syncs from the start of step `first` to the start of step `last` (global steps)."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.calls: list[str] = []
        self._saved: dict[str, object] = {}
        self.window_steps = 0

    def _caller(self) -> str | None:
        stack = traceback.extract_stack()[:-3]
        if any(f.name == "log_metrics" and "logger_connector" in f.filename for f in stack):
            return None  # Lightning writing the logs, every log_every_n_steps: the one periodic conversion allowed
        for frame in reversed(stack):
            if frame.filename == __file__:
                continue
            if any(part in frame.filename.replace("\\", "/") for part in _EXEMPT):
                return None
            return f"{frame.filename}:{frame.lineno} ({frame.name})"
        return None

    def _install(self) -> None:
        counter = self

        def wrap(name, orig):
            def patched(self, *a, **k):
                where = counter._caller()
                if where is not None:
                    counter.calls.append(f"Tensor.{name} at {where}")
                return orig(self, *a, **k)

            return patched

        for name in _METHODS:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, wrap(name, self._saved[name]))
        orig_tensor = torch.tensor
        self._saved["torch.tensor"] = orig_tensor

        def tensor(*a, **k):
            if k.get("device") is not None and not (a and isinstance(a[0], torch.Tensor)):
                where = counter._caller()
                if where is not None:
                    counter.calls.append(f"torch.tensor(host value, device=...) at {where}")
            return orig_tensor(*a, **k)

        torch.tensor = tensor

    def _remove(self) -> None:
        if not self._saved:
            return
        torch.tensor = self._saved.pop("torch.tensor")
        for name in _METHODS:
            setattr(torch.Tensor, name, self._saved.pop(name))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.last:
            self._remove()
        if step == self.first:
            self._install()
        if self.first <= step < self.last:
            self.window_steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._remove()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._remove()


def _trainer_kwargs(counter: SyncCounter, tmp_path) -> dict:
    from lightning.pytorch.loggers import CSVLogger

    # the progress bar on (it reads the step metrics every step); logs written every 4 steps, as a run would
    return dict(
        callbacks=[counter], enable_progress_bar=True, log_every_n_steps=4, logger=CSVLogger(str(tmp_path / "logs"))
    )


@pytest.mark.parametrize("record", [False, True])
def test_classifier_steps_make_no_host_sync(tmp_path, record):
    from sklearn.datasets import load_digits

    from elfs.config import ClassifierTrainingConfig, DynamicsConfig
    from elfs.dynamics import ImageFacts, train_classifier
    from elfs.infra.runtime import Runtime

    d = load_digits()
    x = np.clip(d.images[:256] * 16, 0, 255).astype(np.uint8)[..., None]
    y = d.target[:256]
    cls = DynamicsConfig if record else ClassifierTrainingConfig
    cfg = cls(model="small_cnn", width=4, batch_size=16, lr=0.05, momentum=0.9, nesterov=True, min_lr=1e-4)
    counter = SyncCounter(first=2, last=14)  # 16 steps an epoch: the window holds no epoch end, 3 log writes
    rt = Runtime(trainer_kwargs=_trainer_kwargs(counter, tmp_path))
    images = ImageFacts(crop_padding=1, hflip=True, mean=[0.3], std=[0.35])
    r = train_classifier(
        x, y, np.arange(256), cfg, num_classes=10, steps=16, seed=0, images=images, record=record, runtime=rt
    )
    assert r.steps == 16 and counter.window_steps == 12
    assert counter.calls == [], "\n".join(counter.calls[:20])
    # the learning rate and the step values still reach the logs
    import csv

    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    cols = set().union(*(r.keys() for r in rows))
    assert {"train/lr", "train/loss_step", "train/acc_step", "train/loss_epoch"} <= cols
    assert len([row for row in rows if row.get("train/lr")]) == 4


def test_temi_steps_make_no_host_sync(tmp_path):
    from elfs.cluster.module import TEMIModule
    from elfs.config import ClusterConfig

    g = torch.Generator().manual_seed(0)
    n, dim = 512, 16
    emb = torch.randn(n, dim, generator=g)
    knn = torch.randint(0, n, (n, 5), generator=g)
    cfg = ClusterConfig(
        num_clusters=4, num_heads=2, hidden_dim=16, bottleneck_dim=8, batch_size=32, epochs=1, knn_k=5, warmup_epochs=0
    )
    module = TEMIModule(emb, knn, 4, cfg, seed=0)
    counter = SyncCounter(first=2, last=14)  # 16 steps in the epoch
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        **_trainer_kwargs(counter, tmp_path),
    )
    trainer.fit(module)
    assert trainer.global_step == 16 and counter.window_steps == 12
    assert counter.calls == [], "\n".join(counter.calls[:20])
