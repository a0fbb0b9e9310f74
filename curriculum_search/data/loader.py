"""Collation, seeded loaders and a resumable, deterministic stream of training batches.

How determinism and resumption work (the trainer relies on this):

* :func:`make_loader` builds a ``DataLoader`` whose batches come from an :class:`EpochBatchSampler`:
  the order of epoch ``e`` is ``numpy.random.default_rng([seed, e]).permutation(n)`` (or ``0..n-1``
  without shuffling), cut into consecutive batches. It is a pure function of ``(seed, e)``: no
  generator state is carried from one epoch to the next.
* The augmentation variant of each item is a pure function of the dataset's ``(seed, epoch, index)``
  (see :class:`~curriculum_search.data.coco.CocoDetection`); :func:`set_loader_epoch` sets the epoch
  on the sampler *and* on the dataset under any ``Subset`` wrappers, and re-seeds the loader's
  ``torch.Generator`` (hence the worker base seeds) from ``(seed, e)``.
* Global step ``s`` (0-based count of batches consumed) is batch ``s % L`` of epoch ``s // L``,
  with ``L = len(loader)``. :func:`infinite_batches` ``(loader, start_step=s)`` starts exactly there
  without loading the skipped batches, so a run resumed at step ``s`` sees the same batches as an
  uninterrupted run from step ``s`` on. A multi-stage curriculum should pass its *global* step so the
  stream continues across stages.
* Evaluation and cache filling iterate ``make_loader(FixedVariant(ds, v), ..., shuffle=False)`` once
  (plain ``for batch in loader``), which never depends on the epoch.
* Worker processes are persistent (started once per loader, kept across epochs). The sampler
  yields ``(epoch, index)`` pairs and :class:`EpochItems` sets that epoch on its (worker-local)
  dataset before fetching the item, so every item is the same whether it is loaded in the main
  process or in any worker, however many there are. The dataset must not draw from global RNGs.
* :func:`default_num_workers` picks the worker count (``train.num_workers: null``): one less than
  the CPUs this process may use, at most 8; ``pin_memory`` is on when the batches go to CUDA.
* A :class:`~curriculum_search.errors.UserError` raised in a worker (a broken image) reaches the
  main process as a one-line :class:`LoaderDataError`, not as a worker traceback.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from curriculum_search.errors import DataError, UserError

Batch = tuple[torch.Tensor, list[dict[str, Any]]]
#: Most worker processes :func:`default_num_workers` chooses for one loader.
MAX_AUTO_WORKERS = 8


class LoaderDataError(DataError):
    """A :class:`UserError` raised while loading an item in a worker process, as one line.

    ``DataLoader`` re-creates a worker's exception in the main process as ``type(message)`` where
    the message holds the worker's traceback; this keeps only the original one-line message.
    """

    def __init__(self, message: str) -> None:
        text = str(message)
        if "Traceback (most recent call last)" in text:
            text = text.rstrip().splitlines()[-1]
            text = text.split(f"{type(self).__name__}: ", 1)[-1]
        self.path, self.field = None, None
        UserError.__init__(self, text)


def default_num_workers() -> int:
    """Loader workers to use when the config does not say: CPUs available minus one, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_WORKERS, cpus - 1))


class EpochItems(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Wraps a dataset so that item ``(epoch, i)`` is ``dataset[i]`` in ``epoch`` (see the module doc)."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        if epoch is not None:  # cheap; never cached: other loaders may share the base dataset
            _set_dataset_epoch(self.dataset, epoch)
        try:
            return self.dataset[index]  # type: ignore[no-any-return]
        except LoaderDataError:
            raise
        except UserError as exc:
            if torch.utils.data.get_worker_info() is None:
                raise
            raise LoaderDataError(str(exc)) from None


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> Batch:
    """Stack images into ``(B, 3, S, S)`` and keep the targets as a list of dicts."""
    images = torch.stack([item[0] for item in batch])
    return images, [item[1] for item in batch]


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices whose order depends only on ``(seed, epoch)``; can start mid-epoch.

    Args:
        num_items: Dataset length ``n``.
        batch_size: Items per batch.
        shuffle: Permute the items each epoch (``default_rng([seed, epoch]).permutation(n)``).
        seed: Seed of the permutations.
        drop_last: Drop the last incomplete batch of each epoch.
    """

    def __init__(
        self, num_items: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate and the batch to start from (later iterations start at 0)."""
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def order(self, epoch: int) -> np.ndarray:
        """Item order of ``epoch``."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return np.arange(self.num_items)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch)
        start, self.start_batch = self.start_batch, 0
        for b in range(start, len(self)):
            yield [int(i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]


class _EpochKeys(Sampler[list[tuple[int, int]]]):
    """The batches of an :class:`EpochBatchSampler` as ``(epoch, index)`` keys for :class:`EpochItems`."""

    def __init__(self, inner: EpochBatchSampler) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.inner.epoch
        for batch in self.inner:
            yield [(epoch, i) for i in batch]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and ``numpy`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int | None = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A ``DataLoader`` over ``dataset`` with deterministic, resumable batch order.

    Args:
        dataset: A sized map-style dataset (``CocoDetection`` or a ``Subset`` of one).
        batch_size: Images per batch.
        shuffle: Shuffle each epoch with ``(seed, epoch)``.
        seed: Seed of the order and of the loader's ``torch.Generator``.
        num_workers: Loader worker processes, persistent across epochs (0 = load in the main
            process; None = :func:`default_num_workers`). The batches do not depend on it.
        drop_last: Drop each epoch's last incomplete batch.
        pin_memory: Return batches in pinned memory (faster, asynchronous copies to CUDA).
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed, drop_last)  # type: ignore[arg-type]
    workers = default_num_workers() if num_workers is None else int(num_workers)
    return DataLoader(
        EpochItems(dataset),
        batch_sampler=_EpochKeys(sampler),
        collate_fn=collate_detection,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(_mix(seed, 0)),
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )


def _mix(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch]).integers(2**62))


def _set_dataset_epoch(dataset: Dataset[Any], epoch: int) -> None:
    if isinstance(dataset, (Subset, EpochItems)):
        _set_dataset_epoch(dataset.dataset, epoch)
    elif isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            _set_dataset_epoch(part, epoch)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def _sampler(loader: DataLoader[Any]) -> EpochBatchSampler:
    sampler = loader.batch_sampler
    if isinstance(sampler, _EpochKeys):
        sampler = sampler.inner
    if not isinstance(sampler, EpochBatchSampler):
        raise TypeError(
            "this loader was not built by make_loader (its batch sampler is not an EpochBatchSampler)"
        )
    return sampler


def set_loader_epoch(loader: DataLoader[Any], epoch: int, start_batch: int = 0) -> None:
    """Prepare ``loader``'s next iteration to yield epoch ``epoch`` from batch ``start_batch`` on."""
    sampler = _sampler(loader)
    sampler.set_epoch(epoch, start_batch)
    _set_dataset_epoch(loader.dataset, epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(_mix(sampler.seed, epoch))


def infinite_batches(loader: DataLoader[Any], start_step: int = 0) -> Iterator[Batch]:
    """Yield batches forever, epoch after epoch; the ``k``-th batch yielded is global step ``start_step + k``.

    The stream from ``start_step`` on is identical to the tail of the stream from step 0, whatever
    ``start_step`` is; skipped batches are never loaded. ``loader`` must come from :func:`make_loader`.
    """
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(
            "the loader yields no batch (empty dataset, or drop_last with fewer items than a batch)"
        )
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    epoch, offset = divmod(int(start_step), per_epoch)
    while True:
        set_loader_epoch(loader, epoch, offset)
        yield from loader
        epoch, offset = epoch + 1, 0


def step_position(loader: DataLoader[Any], step: int) -> tuple[int, int]:
    """``(epoch, batch)`` that global ``step`` falls on for ``loader``."""
    return divmod(int(step), len(loader))


__all__ = [
    "MAX_AUTO_WORKERS",
    "Batch",
    "EpochBatchSampler",
    "EpochItems",
    "LoaderDataError",
    "collate_detection",
    "default_num_workers",
    "infinite_batches",
    "make_loader",
    "seed_worker",
    "set_loader_epoch",
    "step_position",
]
