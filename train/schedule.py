"""The streaming schedule for the recurrent variant: many authors in every step, a few blocks of each, the author
state carried from one step to the next.

Training on batches of few authors with many consecutive blocks each trains much worse than shuffled blocks (in
the project's pilot: 194.5 against 139.7 perplexity). Here every author's blocks are cut into chunks of
`blocks_per_step` blocks; `pool` authors are open at a time, and a step takes the next chunk of `batch_size` of them,
drawn at random; an author that ends is replaced by the next in a per-epoch shuffled order. A chunk starts from the
state its author's previous chunk ended with (detached: backpropagation is truncated at step boundaries), or from
the learned initial state for an author's first chunk. With `blocks_per_step` blocks of T tokens per author, a step
holds as many tokens as an in_context batch of batch_size * blocks_per_step rows. So that the recurrence still learns
across that boundary, the carrier can re-run the carried state's last recurrence step inside the next step
(StateCarrier, `learn_recurrence`).

Why a pool larger than the batch: with pool = batch (lanes: every open author advances every step) the same few
authors fill many consecutive steps, and the language model trained worse than on shuffled blocks even where the
state was unused; drawing each step from a pool of all the training authors closed most of that gap (the state
study), while the carried states, older by about pool / batch_size steps, did not hurt.

Many processes: every process draws the same global batches (per-process batch x processes authors, from the seed
and the epoch) and reads its own slice of each; after every step the processes exchange the states their authors
ended with, so each holds every author's carried state and an author may continue on any process. The run is
then the one-process run with the same global batch (up to float sums), and a checkpoint holds the whole schedule:
the carried states (`StateCarrier.state_dict`) and the global step, from which the sampler replays its position.
"""

from __future__ import annotations

import random
from collections import defaultdict

import datasets
import torch

from hullama.train.args import AUTHOR_DRAWS
from hullama.train.batches import EqualEpochs, padding_index

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


class AuthorStreamBatches(EqualEpochs):
    """Batches of dataset indices, each holding the next chunk of up to `batch_size` different authors (with a token
    `budget`: of as many authors as the budget holds, counting the chunks' real tokens).

    `pool` authors are open at a time (at least `batch_size`); every step advances `batch_size` of them, drawn at
    random (`draw`: "uniform", or "remaining": in proportion to their remaining chunks), and an author that ends is
    replaced by the next in a per-epoch shuffled order. With `pool == batch_size` (the default) every open author
    advances every step: lane i reads one author until it ends (module docstring). A larger pool mixes more authors
    over consecutive steps, at the price of older carried states: an author's state waits about pool / batch_size
    steps for its next chunk. `stagger` rotates each author's chunks (see __init__).
    """

    def __init__(self, author_index: list[int], chunk_index: list[int], batch_size: int, seed: int = 0,
                 pool: int | None = None, stagger: bool = False, draw: str = "uniform", num_replicas: int = 1,
                 rank: int = 0, budget: int | None = None, lengths: list[int] | None = None):
        if draw not in AUTHOR_DRAWS:
            raise ValueError(f"draw={draw!r} is unknown: choose one of {', '.join(AUTHOR_DRAWS)}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        if budget is not None and (lengths is None or budget < 1):
            raise ValueError("a token budget needs the chunks' lengths and must be at least 1")
        # batch_size and budget are per process; the draw is over the global batch, the same in every process
        self.per_process, self.rank, self.num_replicas = batch_size, rank, num_replicas
        self.budget = None if budget is None else budget * num_replicas
        self.lengths = lengths
        batch_size *= num_replicas
        self.batch_size, self.seed, self.epoch, self.draw = batch_size, seed, 0, draw
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

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every process's batches of `epoch` (default: the current one), in order."""
        rng = random.Random(self.seed + (self.epoch if epoch is None else epoch))
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
            if self.budget is not None:
                open_lanes = self._fill(self._draw(rng, open_lanes, len(open_lanes)))
            elif len(open_lanes) > self.batch_size:
                open_lanes = self._draw(rng, open_lanes, self.batch_size)
            batches.append([lane.pop(0) for lane in open_lanes])

    def _draw(self, rng: random.Random, open_lanes: list[list[int]], k: int) -> list[list[int]]:
        """k of the open lanes, in the order drawn."""
        if self.draw == "uniform":
            return rng.sample(open_lanes, k)
        # "remaining": without replacement, each lane with probability proportional to its remaining chunks
        # (Efraimidis-Spirakis keys u^(1/w)); with a pool of all authors the epoch is then a uniformly random
        # interleaving of the authors' chunk sequences, so prolific authors do not fill the epoch's last steps alone.
        keys = [rng.random() ** (1.0 / len(lane)) for lane in open_lanes]
        order = sorted(range(len(open_lanes)), key=keys.__getitem__, reverse=True)[:k]
        return [open_lanes[i] for i in (order if self.budget is not None else sorted(order))]

    def _fill(self, ranked: list[list[int]]) -> list[list[int]]:
        """The drawn lanes, in draw order, while their next chunks' real tokens fit the budget (at least one lane;
        stopping at the first that does not fit, so that short chunks are not favoured)."""
        chosen, tokens = [], 0
        for lane in ranked:
            tokens += self.lengths[lane[0]]
            if chosen and tokens > self.budget:
                break
            chosen.append(lane)
        return chosen

    def process_batches(self, epoch: int) -> list[list[int]]:
        """This process's slice of every global batch. A process whose slice is empty (the epoch's last steps can
        have fewer authors than processes) gets a padding row (`padding_index`), so that every process steps."""
        slices = []
        for batch in self.global_batches(epoch):
            size = self.per_process if self.budget is None else -(-len(batch) // self.num_replicas)
            start = self.rank * size
            slices.append(batch[start : start + size] or [padding_index(batch[0])])
        return slices


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
    """What each author's last chunk ended with, to start the author's next chunk from.

    Carried states are detached, so with one block a step the recurrence (W_u, W_h and the summary's norm) would never
    get a gradient: the state a block reads was made in an earlier step. With `learn_recurrence` the carrier keeps,
    instead of the final state, its inputs (the state before the chunk's last real block and that block's summary,
    both detached) and `entering` runs that last recurrence step again inside the new step: the same state (up to the
    weights' update since), now with a gradient to the recurrence from the next block's loss (truncated
    backpropagation one recurrence step across the step boundary, through no decoder layer).
    """

    def __init__(self, learn_recurrence: bool = False):
        self.learn_recurrence = learn_recurrence
        # author -> (state, None): start from this state; (state_before, summary): start from advance(them)
        self.states: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._next: tuple[torch.Tensor, torch.Tensor] | None = None  # the authors and chunks of the next forward
        self._attached_to = None
        self.entered: torch.Tensor | None = None  # the states the last chunks started from

    def attach(self, hullama_model: torch.nn.Module) -> None:
        """Compute `entering` inside `hullama_model`'s forward (a pre-hook filling its `author_state`), for the chunks
        named by `next_chunks`: there FSDP has gathered the author-state module's weights, and the learned initial
        state and the re-run recurrence step get their gradients as any weight does."""
        if self._attached_to is not hullama_model:
            hullama_model.register_forward_pre_hook(self._enter, with_kwargs=True)
            self._attached_to = hullama_model

    def next_chunks(self, authors: torch.Tensor, chunks: torch.Tensor) -> None:
        self._next = (authors, chunks)

    def _enter(self, module, args, kwargs):
        if self._next is None:  # a forward outside the streaming steps (evaluation)
            return None
        (authors, chunks), self._next = self._next, None
        kwargs["author_state"] = self.entered = self.entering(module.author_state, authors, chunks)
        return args, kwargs

    def entering(self, state_module, authors: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        initial = state_module.initial_states(len(authors))  # learned: first chunks train U0
        # A state is read once, then dropped (a first chunk drops the one the author's last epoch ended with).
        carried = [(self.states.pop(a, None), c > 0) for a, c in zip(authors.tolist(), chunks.tolist())]
        carried = [kept if continuing else None for kept, continuing in carried]
        if all(kept is None for kept in carried):
            return initial
        stored = torch.stack([kept[0] if kept is not None else torch.zeros_like(initial[0]) for kept in carried])
        stored = stored.to(initial)
        pending = [i for i, kept in enumerate(carried) if kept is not None and kept[1] is not None]
        if pending:
            rows = torch.tensor(pending, device=initial.device)
            summaries = torch.stack([carried[i][1] for i in pending]).to(initial.device)
            stored = stored.index_copy(0, rows, state_module.advance(stored[rows], summaries).to(stored.dtype))
        continues = torch.tensor([kept is not None for kept in carried], device=initial.device)
        return torch.where(continues[:, None], stored, initial)

    def keep(self, authors: torch.Tensor, entered: torch.Tensor, outputs, exchange=None) -> None:
        """`entered`: the states the chunks started from; `outputs`: the model's output on the chunks; `exchange`:
        with many processes, a function that returns every process's entries (each process's `ended`) merged."""
        ended = self.ended(authors, entered, outputs)
        self.states.update(exchange(ended) if exchange is not None else ended)

    def ended(self, authors: torch.Tensor, entered: torch.Tensor, outputs) -> dict:
        """What each author of the batch continues from next: author -> (state, None), or with `learn_recurrence`
        (state before the chunk's last real block, that block's summary); padding rows (author < 0) are left out."""
        final = outputs["final_author_state"].detach()
        summaries = outputs["block_summaries"] if self.learn_recurrence else None
        if summaries is None:
            return {author: (state, None) for author, state in zip(authors.tolist(), final) if author >= 0}
        block_mask = outputs["block_mask"]  # [b, K]
        before = torch.cat([entered.detach().unsqueeze(1).to(final), outputs["author_states"].detach()[:, :-1]], 1)
        # the last real block of each chunk (a chunk without one keeps its entering state, which is final)
        last = (block_mask.long() * torch.arange(1, block_mask.shape[1] + 1, device=block_mask.device)).argmax(1)
        rows = torch.arange(len(last), device=last.device)
        states, summaries = before[rows, last], summaries.detach()[rows, last]
        return {author: (states[i], summaries[i]) if real else (final[i], None)
                for i, (author, real) in enumerate(zip(authors.tolist(), block_mask.any(1).tolist())) if author >= 0}

    def state_dict(self) -> dict:
        """The carried states (on the CPU), for a checkpoint."""
        return {"learn_recurrence": self.learn_recurrence,
                "states": {author: tuple(None if t is None else t.detach().cpu() for t in kept)
                           for author, kept in self.states.items()}}

    def load_state_dict(self, saved: dict) -> None:
        if saved["learn_recurrence"] != self.learn_recurrence:
            raise ValueError(f"the checkpoint's states were carried with learn_recurrence={saved['learn_recurrence']}")
        self.states = dict(saved["states"])
