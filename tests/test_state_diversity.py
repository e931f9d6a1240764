"""benchmarks/state_diversity.py: the author R2 tells author-specific vectors from noise, and the recorded block
summaries are exactly the ones that drove the recurrence, block by block."""

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from benchmarks.state_diversity import collect, diversity
from conftest import perturb_state_modules, tiny_hullama_config
from hullama.data.corpus import load_corpus
from hullama.data.synthetic import synthetic_corpus
from modeling_hullama import HuLlamaForCausalLM


def test_author_r2_against_its_chance_level():
    rng = np.random.default_rng(0)
    authors = np.repeat(np.arange(10), 3)
    own_vector = rng.normal(size=(10, 16))[authors] + 0.1 * rng.normal(size=(30, 16))
    noise = rng.normal(size=(30, 16))
    specific, random = diversity(own_vector, authors), diversity(noise, authors)
    assert specific["author_r2"] > 0.95 and specific["author_r2_chance"] < 0.5
    # noise: R2 is far from 0 with 3 blocks per author, but no higher than chance
    assert 0.15 < random["author_r2"] < random["author_r2_chance"] + 0.15
    same = diversity(np.ones((30, 4)) + 1e-3 * rng.normal(size=(30, 4)), authors)
    assert same["cos_between_authors"] > 0.99 and abs(same["mean_abs"] - 1) < 0.01


@pytest.mark.parametrize("adapter", [False, True])
def test_recorded_summaries_drive_the_states(tmp_path, tokenizer, adapter):
    torch.manual_seed(0)
    model = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(vocab_size=len(tokenizer))).eval())
    if adapter:  # the state module inside peft's modules_to_save wrapper, as in a HuLM adapter
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["author_state"]))
    path = tmp_path / "authors.jsonl"
    synthetic_corpus(5, 8, seed=1).to_json(path, orient="records", lines=True)
    corpus = load_corpus(path)
    summaries, states, authors = collect(model, tokenizer, corpus, block_size=32, max_blocks=3, batch_size=2)
    assert len(summaries) == len(states) == len(authors) and set(authors) == set(range(5))
    wrapper = (model.get_base_model() if adapter else model).model.author_state
    assert "advance" not in vars(wrapper)  # the recording wrapper is gone again
    state_module = wrapper.modules_to_save["default"] if adapter else wrapper
    with torch.no_grad():
        for author in range(5):
            rows = np.flatnonzero(authors == author)
            previous = state_module.initial_state.unsqueeze(0)
            for row in rows:  # U_k = advance(U_{k-1}, summary_k), in block order
                previous = state_module.advance(previous, torch.from_numpy(summaries[row]).unsqueeze(0))
                assert_close(previous[0], torch.from_numpy(states[row]), rtol=1e-4, atol=1e-5)
