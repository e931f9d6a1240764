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


class EqualEpochs(Sampler):
    """A batch sampler whose epochs all take the same number of steps.

    The Trainer reads a loader's length once and runs that many steps every epoch, while a sampler that draws a new
    order every epoch draws a few batches more or fewer (a different packing, or different authors left at the end):
    a longer epoch lost its last batches, a shorter one ran short and put later epochs (and a resume) out of step.
    Here every epoch of the run (`epochs`) is as long as its longest one: a shorter epoch ends with padding steps (a
    padding row on every process), whose optimizer step the trainer skips (`real_steps`), so nothing is lost and
    nothing extra is learnt. A subclass gives `global_batches(epoch)` and how one step is split over processes."""

    num_replicas: int
    rank: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_epochs(self, epochs: int) -> None:
        """The run's number of epochs (the Trainer's); the length is the longest of them."""
        self.epochs = max(1, epochs)
        self._length = None

    def global_batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def process_batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of `epoch`, one per step (a padding row where it has none in a step)."""
        raise NotImplementedError

    def real_steps(self, epoch: int) -> int:
        """The steps of `epoch` before its padding steps (the same on every process)."""
        known = self.__dict__.setdefault("_real_steps", {})
        if epoch not in known:
            known[epoch] = len(self.process_batches(epoch))
        return known[epoch]

    def __len__(self) -> int:
        if getattr(self, "epochs", None) is None:  # not sized for a run: the current epoch's own steps
            return self.real_steps(self.epoch)
        if getattr(self, "_length", None) is None:
            self._length = max(self.real_steps(e) for e in range(self.epochs))
        return self._length

    def __iter__(self):
        batches = self.process_batches(self.epoch)
        if getattr(self, "epochs", None) is None:
            yield from batches
            return
        if len(batches) > len(self):
            raise ValueError(f"epoch {self.epoch} takes {len(batches)} steps, more than the {len(self)} this sampler "
                             "was sized for: size it for every epoch of the run (set_epochs)")
        yield from batches
        first = batches[0][0] if batches and batches[0][0] >= 0 else None
        filler = [padding_index(first if first is not None else 0)]
        for _ in range(len(self) - len(batches)):
            yield filler


class TokenBudgetBatches(EqualEpochs):
    """Batches of row indices holding at most `budget` real tokens (a row longer than the budget makes a batch
    alone). Each epoch, from the seed and the epoch: the rows are shuffled, cut into groups
    of about `group` budgets of tokens, each group sorted by length and cut greedily into batches (so a batch pads
    little), and the batches shuffled. On `num_replicas` processes, process r reads batches r, r + N, ...; where the
    epoch's batches do not divide evenly, the last processes read a padding row (`padding_index`). Every epoch takes
    as many steps as the longest (`EqualEpochs`)."""

    def __init__(self, lengths: list[int], budget: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 group: int = 64):
        if budget < 1:
            raise ValueError(f"a token budget must be at least 1, got {budget}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        self.lengths, self.budget, self.seed, self.epoch = list(lengths), budget, seed, 0
        self.num_replicas, self.rank, self.group = num_replicas, rank, group

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every process's batches of `epoch` (default: the current one), in order."""
        rng = random.Random(self.seed + (self.epoch if epoch is None else epoch))
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

    def process_batches(self, epoch: int) -> list[list[int]]:
        batches = self.global_batches(epoch)
        steps = math.ceil(len(batches) / self.num_replicas)
        return [batches[s * self.num_replicas + self.rank] if s * self.num_replicas + self.rank < len(batches)
                else [padding_index(batches[s * self.num_replicas][0])] for s in range(steps)]
