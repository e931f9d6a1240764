"""Token-budget batches and padding rows (train/batches.py): every row once an epoch, no batch over the budget,
a new order each epoch from the seed, processes reading disjoint batches; and what the default job records."""

import json

import datasets
from hypothesis import given, settings
from hypothesis import strategies as st

from hullama.train import hulm
from hullama.train.batches import PaddedRows, TokenBudgetBatches, padding_index


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=120), budget=st.integers(1, 200),
       seed=st.integers(0, 3), processes=st.integers(1, 3))
def test_every_row_once_within_the_budget_and_processes_share_the_batches(lengths, budget, seed, processes):
    one = TokenBudgetBatches(lengths, budget, seed=seed, group=4)
    batches = one.global_batches()
    assert sorted(row for batch in batches for row in batch) == list(range(len(lengths)))
    for batch in batches:  # real tokens; a single row may exceed the budget alone
        assert len(batch) == 1 or sum(lengths[i] for i in batch) <= budget
    ranks = [list(TokenBudgetBatches(lengths, budget, seed=seed, group=4, num_replicas=processes, rank=r))
             for r in range(processes)]
    assert len({len(batches_of_rank) for batches_of_rank in ranks}) == 1  # every process steps as often
    real = [b for step in zip(*ranks) for b in step if b[0] >= 0]
    assert real == batches  # process r reads batches r, r + N, ...
    padding = [b for step in zip(*ranks) for b in step if b[0] < 0]
    assert len(padding) == len(ranks[0]) * processes - len(batches) and all(len(b) == 1 for b in padding)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=120), budget=st.integers(8, 120),
       processes=st.integers(1, 3))
def test_every_epoch_takes_as_many_steps_and_pads_the_shorter_ones(lengths, budget, processes):
    """The Trainer runs len(loader) steps every epoch: every epoch of the run is as long as the longest, a shorter one
    ending in padding steps (a padding row on every process) after all of its real batches."""
    ranks = [TokenBudgetBatches(lengths, budget, seed=3, group=2, num_replicas=processes, rank=r)
             for r in range(processes)]
    for sampler in ranks:
        sampler.set_epochs(4)
    steps = len(ranks[0])
    assert steps == max(ranks[0].real_steps(e) for e in range(4)) and all(len(s) == steps for s in ranks)
    for epoch in range(4):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        drawn = [list(sampler) for sampler in ranks]
        assert all(len(d) == steps for d in drawn)
        real = ranks[0].real_steps(epoch)
        assert all(batch[0] < 0 for d in drawn for batch in d[real:])  # padding steps only after the real ones
        rows = sorted(row for d in drawn for batch in d for row in batch if row >= 0)
        assert rows == list(range(len(lengths)))  # every row once, none lost


def test_each_epoch_a_new_order_reproducibly():
    lengths = [(7 * i) % 23 + 1 for i in range(200)]
    sampler = TokenBudgetBatches(lengths, 64, seed=5)
    sampler.set_epochs(2)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[0] != orders[1] and orders[0] == orders[2]
    other = TokenBudgetBatches(lengths, 64, seed=6)
    assert other.global_batches() != sampler.global_batches(0)


def test_grouping_keeps_padding_small():
    lengths = [(37 * i) % 97 + 3 for i in range(2000)]
    batches = TokenBudgetBatches(lengths, 512, seed=0).global_batches()
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert sum(lengths) / padded > 0.9


def test_a_padding_row_has_no_label_and_no_author():
    dataset = datasets.Dataset.from_dict({"input_ids": [[[5, 6, 7]], [[8, 9]]], "labels": [[[5, 6, 7]], [[8, 9]]],
                                          "author_index": [0, 1], "chunk_index": [0, 0]})
    rows = PaddedRows(dataset)
    assert rows[1] == dataset[1]
    padding = rows[padding_index(1)]
    assert padding["input_ids"] == [[8, 9]] and padding["labels"] == [[-100, -100]] and padding["author_index"] == -1
    flat = PaddedRows(datasets.Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[1, 2]]}))
    assert flat[padding_index(0)] == {"input_ids": [1, 2], "labels": [-100, -100]}


def test_the_default_job_gives_every_variant_the_same_token_budget_and_records_it(tmp_path, monkeypatch):
    """The none variant's training batches stay within the recurrent step's padded size, and run_args.json says what
    each variant ran with."""
    seen = []
    original = TokenBudgetBatches.__iter__

    def recording(self):
        for batch in original(self):
            seen.append((self.budget, batch, [self.lengths[i] for i in batch]))
            yield batch

    monkeypatch.setattr(TokenBudgetBatches, "__iter__", recording)
    hulm.main(["--synthetic_authors", "16", "--synthetic_messages", "6", "--num_train_epochs", "1",
               "--scratch_vocab_size", "300", "--scratch_hidden_size", "64", "--scratch_layers", "2",
               "--block_size", "32", "--max_blocks", "2", "--per_device_train_batch_size", "4",
               "--eval_strategy", "no", "--save_strategy", "no", "--output_dir", str(tmp_path / "out")])
    effective = json.loads((tmp_path / "out" / "run_args.json").read_text())["effective"]
    assert set(effective) == {"recurrent", "none"}
    assert effective["recurrent"]["token_budget_per_process"] == effective["none"]["token_budget_per_process"] == 128
    assert "as many authors as fit in 128 real tokens" in effective["recurrent"]["batches"]
    assert "single messages" in effective["none"]["batches"]
    assert seen and all(budget == 128 for budget, _, _ in seen)
    assert all(len(lengths) == 1 or sum(lengths) <= 128 for _, _, lengths in seen)
