"""The streaming schedule for the recurrent variant: many authors in every step, a few blocks of each, the author
state carried from one step to the next.

Training on batches of few authors with many consecutive blocks each trains much worse than shuffled blocks
(DESIGN.md §7: 194.5 vs 139.7 perplexity in the pilot). Here every author's blocks are cut into chunks of
`blocks_per_step` blocks; `pool` authors are open at a time, and a step takes the next chunk of `batch_size` of them,
drawn at random; an author that ends is replaced by the next in a per-epoch shuffled order. A chunk starts from the
state its author's previous chunk ended with (detached: backpropagation is truncated at step boundaries), or from
the learned initial state for an author's first chunk. With `blocks_per_step` blocks of T tokens per author, a step
holds as many tokens as an in_context batch of batch_size * blocks_per_step rows.

Why a pool larger than the batch: with pool = batch (lanes: every open author advances every step) the same few
authors fill many consecutive steps, and the language model trained worse than on shuffled blocks even where the
state was unused; drawing each step from a pool of all the training authors closed most of that gap (README, the
state study), while the carried states, older by about pool / batch_size steps, did not hurt.

Single process only: the authors must see their chunks in order, which sharding batches across processes would
break."""

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
    """Batches of dataset indices, each holding the next chunk of up to `batch_size` different authors.

    `pool` authors are open at a time (at least `batch_size`); every step advances `batch_size` of them, drawn at
    random, and an author that ends is replaced by the next in a per-epoch shuffled order. With `pool ==
    batch_size` (the default) every open author advances every step: lane i reads one author until it ends (module
    docstring). A larger pool mixes more authors over consecutive steps, at the price of older carried states: an
    author's state waits about pool / batch_size steps for its next chunk. `stagger` rotates each author's chunks
    (see __init__).
    """

    def __init__(self, author_index: list[int], chunk_index: list[int], batch_size: int, seed: int = 0,
                 pool: int | None = None, stagger: bool = False):
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.pool = max(batch_size, pool or batch_size)
        chunks: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for row, (author, chunk) in enumerate(zip(author_index, chunk_index)):
            chunks[author].append((chunk, row))
        self.chunks = {author: [row for _, row in sorted(rows)] for author, rows in chunks.items()}
        if stagger:
            # With a pool of all authors, every author spans the whole epoch, so the epoch's first steps hold the
            # authors' first blocks and its last steps their last ones, and the run ends on late blocks. A fixed
            # random rotation of each author's chunks (every epoch starts author a at its chunk r_a and wraps to
            # chunk 0, which starts from U0) spreads the block positions over the epoch; chunk r_a continues from
            # the state that chunk r_a - 1 ended with in the previous epoch (in the first epoch: from U0).
            rotation = random.Random(seed)
            for author in sorted(self.chunks):
                rows = self.chunks[author]
                start = rotation.randrange(len(rows))
                self.chunks[author] = rows[start:] + rows[:start]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        authors = sorted(self.chunks)
        rng.shuffle(authors)
        waiting, lanes, batches = iter(authors), [[] for _ in range(self.pool)], []
        while True:
            for lane in lanes:
                if not lane:
                    lane.extend(self.chunks.get(next(waiting, None), []))
            open_lanes = [lane for lane in lanes if lane]
            if not open_lanes:
                return batches
            if len(open_lanes) > self.batch_size:
                open_lanes = rng.sample(open_lanes, self.batch_size)
            batches.append([lane.pop(0) for lane in open_lanes])

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
        # A state is read once, then dropped (a first chunk drops the one the author's last epoch ended with).
        carried = [(self.states.pop(a, None), c > 0) for a, c in zip(authors.tolist(), chunks.tolist())]
        carried = [state if continuing else None for state, continuing in carried]
        if all(s is None for s in carried):
            return initial
        stored = torch.stack([s if s is not None else torch.zeros_like(initial[0]) for s in carried]).to(initial)
        continues = torch.tensor([s is not None for s in carried], device=initial.device)
        return torch.where(continues[:, None], stored, initial)

    def keep(self, authors: torch.Tensor, final_states: torch.Tensor) -> None:
        for author, state in zip(authors.tolist(), final_states.detach()):
            self.states[author] = state
