"""Batches that the training scripts draw themselves (rather than through accelerate's sharded loaders): token-budget
batches for the variants whose rows differ in length, the loader that tells its sampler each epoch, and padding rows
that keep every process stepping when a process has no real row for a step.

Token budget: a batch holds rows whose real tokens (start tokens included) stay within `budget`, rows of similar
length together so that little is padding. Every variant gets the same budget, the size of a full recurrent step
(authors x blocks x block size; the streaming schedule fills its steps to it the same way), so the variants see about
the same tokens per optimizer step by construction, and no batch of long messages holds several times the tokens of
the mean one (as a fixed number of rows does).
"""

from __future__ import annotations

import math
import random
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler


def padding_index(row: int) -> int:
    """The index `PaddedRows` reads as a padding copy of `row` (negative, so never a real row)."""
    return -1 - row


def _no_labels(labels: Any) -> Any:
    return [_no_labels(x) for x in labels] if isinstance(labels, list) else -100


class PaddedRows(Dataset):
    """A dataset by index, where a negative index (`padding_index`) is a copy of a row with every label -100 (and
    author -1 where rows name one): it runs through the model like any row and adds nothing to the loss or to the
    carried states."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index >= 0:
            return self.dataset[index]
        row = dict(self.dataset[-1 - index])
        row["labels"] = _no_labels(row["labels"])
        if "author_index" in row:
            row["author_index"] = -1
        return row


class EpochBatchesLoader(DataLoader):
    """A DataLoader whose batch sampler draws each epoch's order from the seed and the epoch. The Trainer tells the
    loader it iterates which epoch starts (accelerate's loaders take set_epoch; a plain DataLoader does not, and
    without this every epoch replayed the first one's order)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class TokenBudgetBatches(Sampler):
    """Batches of row indices holding at most `budget` real tokens (a row longer than the budget makes a batch
    alone). Each epoch, from the seed and the epoch: the rows are shuffled, cut into groups
    of about `group` budgets of tokens, each group sorted by length and cut greedily into batches (so a batch pads
    little), and the batches shuffled. On `num_replicas` processes, process r reads batches r, r + N, ...; where the
    epoch's batches do not divide evenly, the last processes read a padding row (`padding_index`)."""

    def __init__(self, lengths: list[int], budget: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 group: int = 64):
        if budget < 1:
            raise ValueError(f"a token budget must be at least 1, got {budget}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        self.lengths, self.budget, self.seed, self.epoch = list(lengths), budget, seed, 0
        self.num_replicas, self.rank, self.group = num_replicas, rank, group

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """Every process's batches of this epoch, in order."""
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches, start = [], 0
        while start < len(order):
            end, tokens = start, 0
            while end < len(order) and tokens < self.group * self.budget:
                tokens += self.lengths[order[end]]
                end += 1
            group = sorted(order[start:end], key=lambda i: -self.lengths[i])
            batch: list[int] = []
            tokens = 0
            for row in group:  # longest first, so that rows of a batch differ little in length
                if batch and tokens + self.lengths[row] > self.budget:
                    batches.append(batch)
                    batch, tokens = [], 0
                batch.append(row)
                tokens += self.lengths[row]
            batches.append(batch)
            start = end
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        batches = self.global_batches()
        for step in range(math.ceil(len(batches) / self.num_replicas)):
            index = step * self.num_replicas + self.rank
            yield batches[index] if index < len(batches) else [padding_index(batches[step * self.num_replicas][0])]

    def __len__(self) -> int:
        return math.ceil(len(self.global_batches()) / self.num_replicas)
