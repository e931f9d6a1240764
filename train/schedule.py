"""The streaming schedule for the recurrent variant: many authors in every step, a few blocks of each, the author
state carried from one step to the next.

Training on batches of few authors with many consecutive blocks each trains much worse than shuffled blocks
(DESIGN.md §7: 194.5 vs 139.7 perplexity in the pilot). Here every author's blocks are cut into chunks of
`blocks_per_step` blocks, and a batch has `batch_size` lanes: lane i reads one author's chunks in order, one chunk a
step, and takes the next author (in a per-epoch shuffled order) when its author ends. A chunk starts from the state
its author's previous chunk ended with (detached: backpropagation is truncated at step boundaries), or from the
learned initial state for an author's first chunk. With `blocks_per_step` blocks of T tokens per lane, a step holds
as many tokens as an in_context batch of batch_size * blocks_per_step rows.

Single process only: the lanes must see their authors' chunks in order, which sharding batches across processes
would break.
"""

from __future__ import annotations

import random
from collections import defaultdict

import datasets
import torch
from torch.utils.data import Sampler

STREAM_COLUMNS = ("author_index", "chunk_index")


def chunk_authors(dataset: datasets.Dataset, blocks_per_step: int) -> datasets.Dataset:
    """Each recurrent example (one author, K blocks) as ceil(K / blocks_per_step) consecutive chunks."""

    def split(batch, indices):
        out = defaultdict(list)
        for row, author in enumerate(indices):
            blocks, labels = batch["input_ids"][row], batch["labels"][row]
            for chunk, start in enumerate(range(0, len(blocks), blocks_per_step)):
                part = blocks[start : start + blocks_per_step]
                out["input_ids"].append(part)
                out["labels"].append(labels[start : start + blocks_per_step])
                out["length"].append(sum(len(b) for b in part))
                out["author_index"].append(author)
                out["chunk_index"].append(chunk)
        return out

    return dataset.map(split, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       desc=f"Chunking authors ({blocks_per_step} blocks a step)")


class AuthorStreamBatches(Sampler):
    """Batches of dataset indices: lane i holds the next chunk of its author (module docstring)."""

    def __init__(self, author_index: list[int], chunk_index: list[int], batch_size: int, seed: int = 0):
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        chunks: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for row, (author, chunk) in enumerate(zip(author_index, chunk_index)):
            chunks[author].append((chunk, row))
        self.chunks = {author: [row for _, row in sorted(rows)] for author, rows in chunks.items()}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        authors = sorted(self.chunks)
        random.Random(self.seed + self.epoch).shuffle(authors)
        waiting, lanes, batches = iter(authors), [[] for _ in range(self.batch_size)], []
        while True:
            for lane in lanes:
                if not lane:
                    lane.extend(self.chunks.get(next(waiting, None), []))
            batch = [lane.pop(0) for lane in lanes if lane]
            if not batch:
                return batches
            batches.append(batch)

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


class StreamCollator:
    """The HuLM collator, plus each chunk's author and chunk index (which the trainer uses to carry states)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        batch = self.collator(features)
        for name in STREAM_COLUMNS:
            if name in features[0]:
                batch[name] = torch.tensor([f[name] for f in features], dtype=torch.long)
        return batch


class StateCarrier:
    """The state each author's last chunk ended with, to start the author's next chunk from."""

    def __init__(self):
        self.states: dict[int, torch.Tensor] = {}

    def entering(self, state_module, authors: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        initial = state_module.initial_states(len(authors))  # learned: first chunks train U0
        carried = [self.states.get(a) if c > 0 else None for a, c in zip(authors.tolist(), chunks.tolist())]
        if all(s is None for s in carried):
            return initial
        stored = torch.stack([s if s is not None else torch.zeros_like(initial[0]) for s in carried]).to(initial)
        continues = torch.tensor([s is not None for s in carried], device=initial.device)
        return torch.where(continues[:, None], stored, initial)

    def keep(self, authors: torch.Tensor, final_states: torch.Tensor) -> None:
        for author, state in zip(authors.tolist(), final_states.detach()):
            self.states[author] = state
