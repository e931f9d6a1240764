"""The streaming schedule: many authors a step, each author's chunks in order, states carried between steps."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config
from hullama.train.batches import padding_index
from hullama.train.schedule import AuthorStreamBatches, StateCarrier, chunk_authors
from modeling_hullama import HuLlamaForCausalLM


@settings(max_examples=40, deadline=None)
@given(chunks_per_author=st.lists(st.integers(1, 6), min_size=1, max_size=20), lanes=st.integers(1, 6),
       seed=st.integers(0, 5))
def test_every_chunk_once_and_each_author_in_order_one_step_apart(chunks_per_author, lanes, seed):
    author_index = [a for a, n in enumerate(chunks_per_author) for _ in range(n)]
    chunk_index = [c for n in chunks_per_author for c in range(n)]
    batches = list(AuthorStreamBatches(author_index, chunk_index, lanes, seed=seed))
    flat = [row for batch in batches for row in batch]
    assert sorted(flat) == list(range(len(author_index)))
    step_of = {row: step for step, batch in enumerate(batches) for row in batch}
    for step, batch in enumerate(batches):
        assert len(batch) <= lanes
        assert len({author_index[r] for r in batch}) == len(batch)  # one chunk per author per step
    for row, (author, chunk) in enumerate(zip(author_index, chunk_index)):
        if chunk:
            previous = next(r for r, (a, c) in enumerate(zip(author_index, chunk_index)) if a == author and c == chunk - 1)
            assert step_of[row] == step_of[previous] + 1


@settings(max_examples=40, deadline=None)
@given(chunks_per_author=st.lists(st.integers(1, 6), min_size=1, max_size=20), batch=st.integers(1, 4),
       extra=st.integers(0, 8), seed=st.integers(0, 5), draw=st.sampled_from(["uniform", "remaining"]))
def test_a_pool_keeps_every_author_in_order_one_chunk_a_step(chunks_per_author, batch, extra, seed, draw):
    author_index = [a for a, n in enumerate(chunks_per_author) for _ in range(n)]
    chunk_index = [c for n in chunks_per_author for c in range(n)]
    batches = list(AuthorStreamBatches(author_index, chunk_index, batch, seed=seed, pool=batch + extra, draw=draw))
    assert sorted(row for b in batches for row in b) == list(range(len(author_index)))
    step_of = {row: step for step, b in enumerate(batches) for row in b}
    open_authors = batch + extra
    for b in batches:
        assert 1 <= len(b) <= batch and len({author_index[r] for r in b}) == len(b)
    for row, (author, chunk) in enumerate(zip(author_index, chunk_index)):
        if chunk:  # in order, and (the pool being finite) never further apart than the pool allows on average
            previous = author_index.index(author) + chunk - 1
            assert step_of[row] > step_of[previous]
    # never more than `pool` authors open (started, not finished) at once
    for step in range(len(batches)):
        started = {author_index[r] for b in batches[: step + 1] for r in b}
        finished = {author_index[r] for b in batches[: step + 1] for r in b
                    if chunk_index[r] == chunks_per_author[author_index[r]] - 1}
        assert len(started - finished) <= open_authors


@settings(max_examples=30, deadline=None)
@given(chunks_per_author=st.lists(st.integers(1, 6), min_size=1, max_size=12), seed=st.integers(0, 5))
def test_staggered_authors_read_a_fixed_rotation_of_their_chunks_every_epoch(chunks_per_author, seed):
    author_index = [a for a, n in enumerate(chunks_per_author) for _ in range(n)]
    chunk_index = [c for n in chunks_per_author for c in range(n)]
    sampler = AuthorStreamBatches(author_index, chunk_index, 2, seed=seed, pool=len(chunks_per_author), stagger=True)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        rows = [row for batch in sampler for row in batch]
        assert sorted(rows) == list(range(len(author_index)))
        order = {a: [chunk_index[r] for r in rows if author_index[r] == a] for a in range(len(chunks_per_author))}
        for author, chunks in order.items():  # a rotation of 0..n-1: starts anywhere, wraps to chunk 0 once
            start = chunks[0]
            assert chunks == [(start + i) % len(chunks) for i in range(len(chunks))]
        orders.append(order)
    assert orders[0] == orders[1]  # the same rotation every epoch: chunk r continues from epoch e's chunk r - 1


def test_stagger_spreads_first_blocks_over_the_epoch():
    author_index = [a for a in range(60) for _ in range(10)]
    chunk_index = [c for _ in range(60) for c in range(10)]
    def steps_of_first_chunks(stagger):
        batches = list(AuthorStreamBatches(author_index, chunk_index, 4, seed=0, pool=60, stagger=stagger))
        return [step for step, b in enumerate(batches) for r in b if chunk_index[r] == 0], len(batches)
    synchronised, steps = steps_of_first_chunks(False)
    staggered, _ = steps_of_first_chunks(True)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert mean(synchronised) < steps / 8  # every author opens at once: first chunks at the start of the epoch
    assert steps / 3 < mean(staggered) < 2 * steps / 3  # rotated: first chunks spread over the epoch


def test_drawing_by_remaining_chunks_keeps_short_authors_to_the_end_of_the_epoch():
    """Uniform draws finish the authors with few blocks early, leaving the last steps to the prolific ones; draws in
    proportion to the remaining chunks interleave all authors' chunks uniformly over the epoch."""
    lengths = [1] * 60 + [20] * 10
    author_index = [a for a, n in enumerate(lengths) for _ in range(n)]
    chunk_index = [c for n in lengths for c in range(n)]

    def short_authors_position(draw):
        batches = list(AuthorStreamBatches(author_index, chunk_index, 4, seed=0, pool=len(lengths), draw=draw))
        steps = [step for step, b in enumerate(batches) for r in b if lengths[author_index[r]] == 1]
        return sum(steps) / len(steps) / len(batches)

    assert short_authors_position("uniform") < 0.25
    assert 0.35 < short_authors_position("remaining") < 0.65
    with pytest.raises(ValueError, match="draw='sideways' is unknown"):
        AuthorStreamBatches(author_index, chunk_index, 4, draw="sideways")


def test_a_pool_mixes_more_authors_over_consecutive_steps():
    author_index = [a for a in range(40) for _ in range(10)]
    chunk_index = [c for _ in range(40) for c in range(10)]
    lanes = list(AuthorStreamBatches(author_index, chunk_index, 4, seed=0))
    pooled = list(AuthorStreamBatches(author_index, chunk_index, 4, seed=0, pool=40))
    assert list(AuthorStreamBatches(author_index, chunk_index, 4, seed=0, pool=4)) == lanes  # pool = batch: lanes
    authors_in = lambda batches: len({author_index[r] for b in batches[:10] for r in b})  # noqa: E731
    assert authors_in(lanes) == 4 and authors_in(pooled) > 20
    assert [len(b) for b in pooled[:90]] == [4] * 90


def test_lanes_fill_every_step_while_authors_remain():
    author_index = [a for a in range(10) for _ in range(3)]
    chunk_index = [c for _ in range(10) for c in range(3)]
    batches = list(AuthorStreamBatches(author_index, chunk_index, 4, seed=0))
    assert [len(b) for b in batches[:6]] == [4] * 6  # 4 authors in every step, not 1 author x 3 blocks


def _chunked_authors(ids: torch.Tensor, blocks_per_step: int) -> datasets.Dataset:
    dataset = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist(),
                                          "length": [ids.shape[1] * ids.shape[2]] * len(ids)})
    return chunk_authors(dataset, blocks_per_step)


def _run_chunks(model, chunks, carrier, step):
    """Step `step` of a two-author stream: chunk `step` of each author from the carried state."""
    rows = [i for i, c in enumerate(chunks["chunk_index"]) if c == step]
    authors = torch.tensor([chunks["author_index"][i] for i in rows])
    blocks = torch.tensor([chunks["input_ids"][i] for i in rows])
    entering = carrier.entering(model.model.author_state, authors, torch.full((len(rows),), step))
    out = model(blocks, author_state=entering, labels=blocks)
    carrier.keep(authors, entering, out)
    return entering, out


@pytest.mark.parametrize("learn_recurrence", [False, True])
def test_chunks_carry_the_state_of_one_pass(learn_recurrence):
    torch.manual_seed(0)
    model = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config())).eval()
    ids = torch.randint(2, 512, (2, 4, 12))
    chunks = _chunked_authors(ids, 2)
    assert chunks["chunk_index"] == [0, 1, 0, 1] and chunks["author_index"] == [0, 0, 1, 1]
    carrier = StateCarrier(learn_recurrence=learn_recurrence)
    with torch.no_grad():
        whole = model(ids)
        for step in (0, 1):
            _, out = _run_chunks(model, chunks, carrier, step)
            assert_close(out.logits, whole.logits[:, 2 * step: 2 * step + 2])
        assert_close(carrier.entering(model.model.author_state, torch.tensor([0, 1]), torch.ones(2, dtype=torch.long)),
                     whole.final_author_state)
    # a state is read once: the next epoch's first chunks start from U0 and leave nothing behind
    _run_chunks(model, chunks, carrier, 0)
    first = carrier.entering(model.model.author_state, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long))
    assert_close(first, model.model.author_state.initial_states(2))
    assert not carrier.states


@pytest.mark.parametrize("learn_recurrence", [False, True])
def test_one_block_a_step_trains_the_recurrence_only_when_asked(learn_recurrence):
    """A carried state is detached: with one block a step the recurrence's loss gradient can only come from
    re-running its last step inside the next one."""
    torch.manual_seed(0)
    model = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(state_mechanism="gate")))
    chunks = _chunked_authors(torch.randint(2, 512, (2, 3, 12)), 1)
    carrier = StateCarrier(learn_recurrence=learn_recurrence)
    with torch.no_grad():
        _run_chunks(model, chunks, carrier, 0)
    _, out = _run_chunks(model, chunks, carrier, 1)
    out.loss.backward()
    state = model.model.author_state
    recurrence = [state.state_to_state.weight, state.summary_to_state.weight, state.summary_norm.weight]
    reached = [p.grad is not None and p.grad.abs().sum() > 0 for p in recurrence]
    assert reached == [learn_recurrence] * 3
    assert state.state_to_residual.weight.grad.abs().sum() > 0  # the injection learns either way


@settings(max_examples=40, deadline=None)
@given(chunks_per_author=st.lists(st.integers(1, 5), min_size=1, max_size=16), per_process=st.integers(1, 3),
       processes=st.integers(2, 3), seed=st.integers(0, 3), epoch=st.integers(0, 2), budget=st.sampled_from([None, 40]),
       draw=st.sampled_from(["uniform", "remaining"]))
def test_processes_read_slices_of_the_one_process_global_batches(chunks_per_author, per_process, processes, seed,
                                                                epoch, budget, draw):
    """N processes with per-process batch b (or token budget B) draw exactly the batches of one process with batch
    N x b (budget N x B): process r reads slice r of each; a process whose slice is empty reads one padding row, so
    that every process steps."""
    author_index = [a for a, n in enumerate(chunks_per_author) for _ in range(n)]
    chunk_index = [c for n in chunks_per_author for c in range(n)]
    lengths = [(7 * row) % 13 + 4 for row in range(len(author_index))]
    kwargs = dict(seed=seed, pool=8, stagger=True, draw=draw, lengths=lengths)
    one = AuthorStreamBatches(author_index, chunk_index, per_process * processes,
                              budget=budget and budget * processes, **kwargs)
    ranks = [AuthorStreamBatches(author_index, chunk_index, per_process, num_replicas=processes, rank=r,
                                 budget=budget, **kwargs) for r in range(processes)]
    for sampler in (one, *ranks):
        sampler.set_epochs(3)
        sampler.set_epoch(epoch)
    global_batches = one.global_batches()
    per_rank = [list(sampler) for sampler in ranks]
    assert all(len(batches) == len(one) == len(sampler) for batches, sampler in zip(per_rank, ranks))
    assert all(sampler.real_steps(epoch) == len(global_batches) for sampler in ranks)
    for step, batch in enumerate(global_batches):
        parts = [batches[step] for batches in per_rank]
        real = [row for part in parts for row in part if row >= 0]
        assert real == batch
        size = per_process if budget is None else -(-len(batch) // processes)
        for r, part in enumerate(parts):
            expected = batch[r * size: (r + 1) * size]
            assert part == (expected or [padding_index(batch[0])])


@settings(max_examples=40, deadline=None)
@given(chunks_per_author=st.lists(st.integers(1, 6), min_size=1, max_size=20), budget=st.integers(1, 80),
       seed=st.integers(0, 5), draw=st.sampled_from(["uniform", "remaining"]))
def test_a_token_budget_fills_steps_with_whole_chunks_each_author_in_order(chunks_per_author, budget, seed, draw):
    author_index = [a for a, n in enumerate(chunks_per_author) for _ in range(n)]
    chunk_index = [c for n in chunks_per_author for c in range(n)]
    lengths = [(5 * row) % 17 + 3 for row in range(len(author_index))]
    batches = list(AuthorStreamBatches(author_index, chunk_index, 2, seed=seed, pool=6, draw=draw, budget=budget,
                                       lengths=lengths))
    assert sorted(row for batch in batches for row in batch) == list(range(len(author_index)))
    for batch in batches:
        assert len(batch) == 1 or sum(lengths[r] for r in batch) <= budget
        assert len({author_index[r] for r in batch}) == len(batch)
    step_of = {row: step for step, batch in enumerate(batches) for row in batch}
    for author in set(author_index):
        steps = [step_of[r] for r, a in enumerate(author_index) if a == author]
        assert steps == sorted(steps)  # an author's chunks in order


def test_carrier_skips_padding_rows_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config())).eval()
    ids = torch.randint(2, 512, (3, 2, 12))
    carrier = StateCarrier(learn_recurrence=True)
    with torch.no_grad():
        entering = model.model.author_state.initial_states(3)
        carrier.keep(torch.tensor([4, -1, 7]), entering, model(ids))
    assert set(carrier.states) == {4, 7}
    torch.save(carrier.state_dict(), tmp_path / "states.pt")
    restored = StateCarrier(learn_recurrence=True)
    restored.load_state_dict(torch.load(tmp_path / "states.pt", weights_only=True))
    authors, chunks = torch.tensor([4, 7]), torch.ones(2, dtype=torch.long)
    with torch.no_grad():
        assert_close(restored.entering(model.model.author_state, authors, chunks),
                     carrier.entering(model.model.author_state, authors, chunks))
    with pytest.raises(ValueError, match="learn_recurrence=True"):
        StateCarrier(learn_recurrence=False).load_state_dict(torch.load(tmp_path / "states.pt", weights_only=True))


def test_carrier_resumes_after_a_chunk_ending_in_padding():
    """An author's last chunk may end in all-padding blocks: the state to continue from is the last real block's."""
    torch.manual_seed(0)
    model = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config())).eval()
    ids = torch.randint(2, 512, (2, 3, 12))
    mask = torch.ones_like(ids)
    mask[0, 2] = 0  # author 0's third block is padding
    carrier = StateCarrier(learn_recurrence=True)
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        entering = model.model.author_state.initial_states(2)
        carrier.keep(torch.tensor([0, 1]), entering, out)
        resumed = carrier.entering(model.model.author_state, torch.tensor([0, 1]), torch.ones(2, dtype=torch.long))
    assert_close(resumed, out.final_author_state)
    assert_close(resumed[0], out.author_states[0, 1])


def test_hulm_with_streaming_schedule(tmp_path):
    from hullama.train import hulm

    results = hulm.main(["--synthetic_authors", "12", "--synthetic_messages", "6", "--num_train_epochs", "1",
                         "--scratch_vocab_size", "300", "--scratch_hidden_size", "64", "--scratch_layers", "2",
                         "--block_size", "32", "--max_blocks", "4", "--variants", "recurrent", "--blocks_per_step", "1",
                         "--per_device_train_batch_size", "1", "--output_dir", str(tmp_path)])
    assert results["variants"]["recurrent"]["perplexity"] > 1
    # one lane (--per_device_train_batch_size 1) reading one block a step: as many steps as training blocks
    trainer_state = json.loads(next((tmp_path / "recurrent").glob("checkpoint-*/trainer_state.json")).read_text())
    assert trainer_state["train_batch_size"] == 1 and trainer_state["global_step"] >= 10
    # --learn_recurrence (default): the recurrence learned although each step reads one block (its bias starts at 0)
    trained = HuLlamaForCausalLM.from_pretrained(tmp_path / "recurrent")
    assert trained.config.normalize_state_update
    assert trained.model.author_state.summary_to_state.bias.abs().sum() > 0


def _epoch_orders(tmp_path, monkeypatch, name, *extra):
    """Run the default recipe (streaming schedule) for three epochs; the batches each epoch drew, per epoch."""
    from hullama.train import hulm
    from hullama.train.batches import EqualEpochs
    from hullama.train.schedule import AuthorStreamBatches

    drawn = []
    original = EqualEpochs.__iter__  # the sampler's own, not an earlier call's recording

    def recording(self):  # what each pass over the sampler (an epoch) yields
        order = list(original(self))
        drawn.append((self.epoch, order))
        return iter(order)

    monkeypatch.setattr(AuthorStreamBatches, "__iter__", recording)
    hulm.main(["--synthetic_authors", "16", "--synthetic_messages", "6", "--num_train_epochs", "3",
               "--scratch_vocab_size", "300", "--scratch_hidden_size", "32", "--scratch_layers", "2", "--block_size",
               "32", "--max_blocks", "2", "--variants", "recurrent", "--per_device_train_batch_size", "2",
               "--save_strategy", "no", "--eval_strategy", "no", "--output_dir", str(tmp_path / name), *extra])
    return drawn


def test_every_epoch_of_the_default_recipe_draws_a_new_order_reproducibly(tmp_path, monkeypatch):
    first = _epoch_orders(tmp_path, monkeypatch, "a")
    assert [epoch for epoch, _ in first] == [0, 1, 2]  # the Trainer tells the sampler each epoch
    orders = [order for _, order in first]
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    real = [sorted(row for batch in order for row in batch if row >= 0) for order in orders]
    assert real[0] == real[1] == real[2] and len(set(real[0])) == len(real[0])  # every chunk once, every epoch
    assert len({len(order) for order in orders}) == 1  # equally many steps: the Trainer runs every one of them
    again = _epoch_orders(tmp_path, monkeypatch, "b")
    assert again == first  # from the seed and the epoch: the same run draws the same orders


def test_every_epoch_trains_every_chunk_once_and_padding_steps_move_no_weight(tmp_path, monkeypatch):
    """Epochs draw different numbers of steps; the Trainer runs len(loader) steps each: every epoch trains every
    (author, chunk) exactly once, and the optimizer skips the steps that hold only an epoch's padding."""
    from hullama.train import hulm, trainer

    trained, steps, skipped, has_real = [], [], [], {}
    compute_loss, padding_update = trainer.HuLMTrainer.compute_loss, trainer.HuLMTrainer._padding_update

    def recording_loss(self, model, inputs, *args, **kwargs):
        real = inputs["author_index"] >= 0
        epoch = self.state.global_step // math.ceil(len(self._equal_epochs) / self.args.gradient_accumulation_steps)
        trained.extend((epoch, a, c) for a, c in zip(inputs["author_index"][real].tolist(),
                                                     inputs["chunk_index"][real].tolist()))
        has_real[self.state.global_step] = has_real.get(self.state.global_step, False) or bool(real.any())
        return compute_loss(self, model, inputs, *args, **kwargs)

    def recording_padding(self):
        skip = padding_update(self)
        (skipped if skip else steps).append(self.state.global_step)
        return skip

    monkeypatch.setattr(trainer.HuLMTrainer, "compute_loss", recording_loss)
    monkeypatch.setattr(trainer.HuLMTrainer, "_padding_update", recording_padding)
    hulm.main(["--synthetic_authors", "30", "--synthetic_messages", "6", "--num_train_epochs", "4",
               "--scratch_vocab_size", "300", "--scratch_hidden_size", "32", "--scratch_layers", "2", "--block_size",
               "32", "--max_blocks", "3", "--variants", "recurrent", "--per_device_train_batch_size", "3",
               "--save_strategy", "no", "--eval_strategy", "no", "--output_dir", str(tmp_path / "out")])
    per_epoch = [sorted((a, c) for e, a, c in trained if e == epoch) for epoch in range(4)]
    assert per_epoch[0] and all(chunks == per_epoch[0] for chunks in per_epoch)  # every chunk, every epoch
    assert len(set(per_epoch[0])) == len(per_epoch[0])  # once
    state = json.loads(next((tmp_path / "out").rglob("trainer_state.json")).read_text()) if list(
        (tmp_path / "out").rglob("trainer_state.json")) else None
    assert skipped, "no epoch was shorter than another: the setting does not exercise the padding steps"
    assert len(steps) + len(skipped) == len(set(steps + skipped))  # one decision per optimizer step
    assert all(has_real[step] for step in steps) and not any(has_real[step] for step in skipped)  # exactly padding
    assert state is None or state["global_step"] == len(steps) + len(skipped)


def test_the_state_held_at_u0_control_trains_on_the_same_batches_and_never_reads_a_carried_state(tmp_path, monkeypatch):
    """--hold_state_at_initial (the state study's control): the default recipe's batches, in the same order, but every
    block reads U0, so no loss reaches the recurrence (its bias stays exactly at its initial 0). U0 starts at zero and
    the gate closed, and reading only U0 opens neither: the control is the plain language model trained on the
    recurrent schedule, and its held-out scores do not depend on the state at all."""
    from hullama.eval.perplexity import HELD_OUT_SCORES, TokenScores

    normal = _epoch_orders(tmp_path, monkeypatch, "normal")
    held = _epoch_orders(tmp_path, monkeypatch, "held", "--hold_state_at_initial")
    assert held == normal  # same tokens, same schedule, same seed
    models = {name: HuLlamaForCausalLM.from_pretrained(tmp_path / name / "recurrent") for name in ("normal", "held")}
    recurrence = {name: m.model.author_state.summary_to_state.bias for name, m in models.items()}
    assert recurrence["held"].abs().sum() == 0 and recurrence["normal"].abs().sum() > 0
    scores = {name: TokenScores.load(tmp_path / name / HELD_OUT_SCORES) for name in ("normal", "held")}
    held_scores, normal_scores = scores["held"].nll, scores["normal"].nll
    np.testing.assert_array_equal(held_scores["recurrent"], held_scores["recurrent_zeroed_state"])
    assert not np.array_equal(normal_scores["recurrent"], normal_scores["recurrent_zeroed_state"])
