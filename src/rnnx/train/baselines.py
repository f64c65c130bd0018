"""Reference baselines computed on the same splits as the trained models.

:func:`one_nn` is 1-nearest-neighbour classification with the Euclidean distance on
the (normalised) sequences, the classic time-series baseline ("1-NN ED" in the UCR
archive's tables). Its reference set is the whole training split (train + val), so
on UCR sets it reproduces the archive's published 1-NN ED accuracies — a check that
the loaders keep the archive's data and split (ECG5000 0.925, FordA 0.665).
"""

from __future__ import annotations

import torch

from rnnx.data import TaskData, get_task


def one_nn(
    task: TaskData | str, *, chunk: int = 1024, padded: bool = False, **task_kwargs
) -> float:
    """Test accuracy of 1-NN (Euclidean) on a classification task.

    Sequences of unequal length are refused unless ``padded=True``: then the distance
    is taken between the task's zero-padded sequences (each normalised over its own
    valid steps first, then padded to the longest length), one simple convention
    among several for 1-NN ED on variable-length sets — say so where it is quoted.
    """
    if isinstance(task, str):
        task = get_task(task, **task_kwargs)
    if task.kind != "classification":
        raise ValueError(f"task: 1-NN needs a classification task, {task.name} is {task.kind}")
    if task.train.lengths is not None and not padded:
        raise ValueError(
            f"task: {task.name} has variable lengths; 1-NN ED needs equal lengths "
            "(padded=True compares the zero-padded sequences)"
        )
    L = max(task.train.x.shape[1], task.val.x.shape[1], task.test.x.shape[1])

    def flat(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != L and not padded:
            raise ValueError("task: train and test sequences differ in length")
        return torch.nn.functional.pad(x, (0, 0, 0, L - x.shape[1])).flatten(1).double()

    ref_x = torch.cat([flat(task.train.x), flat(task.val.x)])
    ref_y = torch.cat([task.train.y, task.val.y])
    ref_sq = (ref_x**2).sum(1)
    correct = 0
    for xs, ys in zip(task.test.x.split(chunk), task.test.y.split(chunk)):
        q = flat(xs)
        # argmin ||q - r||² = argmin (||r||² - 2 q·r): one matmul per chunk.
        d = ref_sq[None] - 2 * q @ ref_x.T
        correct += int((ref_y[d.argmin(1)] == ys).sum())
    return correct / len(task.test)
