"""The order of the data: one global order per epoch, split across processes, resumable.

:class:`ShardedBatchSampler` draws the permutation of epoch e from ``(seed, e)``
alone, cuts it into global batches of ``batch_size`` and gives process r of W the
r-th slice of every global batch. So

* W processes together see exactly the batches one process sees, and with a loss that
  is a mean over equal-sized slices, DDP's averaged gradient equals the single-process
  gradient (the DDP test checks the parameters);
* the order never depends on how many batches were drawn before, so a resumed run
  skips the batches done before the checkpoint (:meth:`resume`) and continues with
  the very batches the uninterrupted run used.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ShardedBatchSampler:
    """Batches of indices into a data set of ``n`` items (a DataLoader ``batch_sampler``).

    Args:
        n: data set size.
        batch_size: global batch size; must be divisible by ``world_size`` when
            ``shuffle`` (training).
        shuffle: a fresh permutation per epoch (training) or the natural order.
        seed: seeds the permutations.
        drop_last: drop the last incomplete global batch (training, so that every
            step sees ``batch_size`` items; kept if it is the only batch).
        rank, world_size: this process's place among the DDP processes.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 1:
            raise ValueError(f"n: expected a non-empty data set, got {n} items")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if shuffle and batch_size % world_size:
            raise ValueError(
                f"batch_size: {batch_size} is not divisible by the {world_size} processes"
            )
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last and n >= batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (called before every epoch)."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue epoch ``epoch`` after its first ``batches_done`` batches (once)."""
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(batches_done))

    def _global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def _shard(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.tensor_split(self.world_size)[self.rank]

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        for i, batch in enumerate(self._global_batches()):
            shard = self._shard(batch)
            if i >= skip and len(shard):
                yield shard.tolist()

    def __len__(self) -> int:
        return sum(1 for b in self._global_batches() if len(self._shard(b)))
