"""What makes a training run killed mid-epoch resume to the result it would have reached uninterrupted.

Lightning restores weights, optimiser, schedulers, callbacks and loop counters
from ``last.ckpt``, but three things of an epoch in progress are not in it:

* **where the data loader was.** A plain shuffled loader starts the epoch
  over with a fresh order (Lightning warns "your dataloader is not
  resumable"), so some images are seen twice and others not at all.
  :class:`ResumableLoader` draws each epoch's order from ``(seed, epoch)``
  alone and records how many batches it has handed out; Lightning stores that
  in the checkpoint (its ``state_dict`` interface), and a resumed loader
  skips exactly those batches of the same order.
* **the random state.** Augmentation and dropout draw from torch's global
  generator, whose state after a restart is not the state it had mid-epoch.
  :class:`SeededSteps` reseeds it before every batch from ``(seed, batches
  started)``, a counter it saves and restores, so batch k sees the same
  draws in both runs. Data loader *workers* have generators of their own:
  exact equality needs ``data.num_workers=0`` (with workers the order and the
  coverage are still exact, the augmentations differ).
* **the training metrics so far.** torchmetrics keeps epoch accumulators
  out of checkpoints; :func:`metric_states` / :func:`restore_metric_states`
  carry them across, so the resumed epoch's training loss and AUROC cover the
  whole epoch.

All of it is on with ``train.deterministic=true`` (which also asks torch for
deterministic kernels), for one process; under DDP Lightning's distributed
sampler is already ordered by ``(seed, epoch)`` and a mid-epoch resume starts
that epoch's order again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, Sampler


def draw_seed(*keys: int) -> int:
    """A 32-bit seed that depends on ``keys`` only (and well apart for neighbouring keys)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` chosen by ``(seed, epoch)``; it can start part-way through an epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self._resume: tuple[int, int] | None = None  # (epoch, indices to skip), used once

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        self._resume = (int(epoch), int(skip))

    def pending_skip(self) -> int:
        """How many indices the next iteration leaves out (0 unless resuming into this epoch)."""
        return self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0

    def __len__(self) -> int:
        return self.n  # the whole epoch, even when resuming: Lightning counts batches against it

    def __iter__(self) -> Iterator[int]:
        skip = self.pending_skip()
        self._resume = None
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return iter(order[skip:].tolist())


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` that Lightning can checkpoint and resume mid-epoch."""

    def __init__(self, dataset: Dataset, *, seed: int, **kwargs: Any) -> None:
        # A generator of its own: torch draws each iterator's worker base seed from it, not from the global
        # generator, whose sequence a mid-epoch restart would shift by that one draw.
        super().__init__(dataset, sampler=EpochSampler(len(dataset), seed),  # type: ignore[arg-type]
                         generator=torch.Generator().manual_seed(seed), **kwargs)
        self.batches = 0  # batches handed out in the current epoch, skipped ones included

    def __iter__(self) -> Iterator[Any]:  # a generator: starts at the first batch, after set_epoch
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        self.batches = sampler.pending_skip() // (self.batch_size or 1)
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.batches}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"] * (self.batch_size or 1))  # type: ignore[attr-defined]


class SeededSteps(Callback):
    """Reseeds torch before each training batch from ``(seed, batches started)``, restored on resume."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.started = 0

    def _reseed(self) -> None:
        torch.manual_seed(draw_seed(self.seed, self.started))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed()  # a resumed run fetches its next batch right after this

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.started += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._reseed()  # for the augmentation of the batch fetched next

    def state_dict(self) -> dict[str, int]:
        return {"started": self.started}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.started = int(state_dict["started"])


def metric_states(module: L.LightningModule, names: Sequence[str]) -> dict[str, Any]:
    """The accumulators of the torchmetrics ``names`` (tensors and lists of tensors: weights-only safe)."""
    out = {}
    for name in names:
        metric = getattr(module, name)
        out[name] = {"state": {k: (list(v) if isinstance(v, list) else v.detach().cpu())
                               for k, v in metric.metric_state.items()},
                     "updates": int(metric._update_count)}
    return out


def restore_metric_states(module: L.LightningModule, saved: dict[str, Any]) -> None:
    for name, entry in saved.items():
        metric = getattr(module, name)
        for key, value in entry["state"].items():
            setattr(metric, key, [t.to(metric.device) for t in value] if isinstance(value, list)
                    else value.to(metric.device))
        metric._update_count = int(entry["updates"])
        metric._computed = None
