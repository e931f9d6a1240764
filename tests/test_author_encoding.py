"""Author states for many authors at once: `author_inputs` lays out messages exactly as training does, and
`encode_authors` returns the states a full forward returns, running only the layers the state depends on."""

import pytest
import torch

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaModel, author_inputs

LAYOUTS = {"all_at_once": {}, "in_order": {"insert_layer": 1, "extract_layer": 2}}


def _model(layout="all_at_once"):
    torch.manual_seed(0)
    return perturb_state_modules(HuLlamaModel(tiny_hullama_config(**LAYOUTS[layout]))).eval()


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_encoded_states_equal_the_forward_pass_and_continue_from_stored_states(layout):
    model = _model(layout)
    ids = _ids(3, 4, 16)
    mask = torch.ones_like(ids)
    mask[0, 3] = 0  # an author with fewer blocks
    mask[1, 2, 5:] = 0  # a short block
    stored = torch.randn(3, model.config.state_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for state in (None, stored):
            full = model(ids, attention_mask=mask, author_state=state)
            encoded = model.encode_authors(ids, mask, author_state=state)
            assert torch.equal(encoded.author_states, full.author_states)
            assert torch.equal(encoded.final_author_state, full.final_author_state)
            assert torch.equal(encoded.block_mask, full.block_mask)


def test_encoding_runs_no_layer_above_the_extraction():
    model = _model()
    ran = []
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, layer in enumerate(model.layers)]
    with torch.no_grad():
        model.encode_authors(_ids(2, 3, 8))
    for hook in hooks:
        hook.remove()
    assert sorted(set(ran)) == list(range(model.config.extract_layer + 1))


def test_heads_encode_through_their_base():
    torch.manual_seed(0)
    lm = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config())).eval()
    ids = _ids(2, 3, 8)
    with torch.no_grad():
        assert torch.equal(lm.encode_authors(ids).final_author_state, lm(ids).final_author_state)


def test_author_inputs_lay_out_messages_exactly_as_training_does(tokenizer):
    from hullama.data.blocks import build_blocks
    from hullama.data.corpus import load_corpus
    from hullama.data.synthetic import synthetic_corpus

    corpus = load_corpus(synthetic_corpus(6, 9, seed=3))
    data = build_blocks(corpus, tokenizer, variant="recurrent", task="lm", block_size=24, cache_dir=None)
    messages = {a: group["message"].tolist() for a, group in corpus.frame.groupby("user_id", sort=False)}
    for row in data.dataset:
        laid = author_inputs(tokenizer, [messages[row["user_id"]]], block_size=24)
        mask = laid["attention_mask"][0].bool()
        blocks = [laid["input_ids"][0, k][mask[k]].tolist() for k in range(mask.shape[0]) if mask[k].any()]
        assert blocks == row["input_ids"], row["user_id"]
        for (block, position), text in zip(laid["message_ends"][0], messages[row["user_id"]]):
            last = tokenizer(text, add_special_tokens=False)["input_ids"][-1]
            assert laid["input_ids"][0, block, position] == last
            assert mask[block, position]


def test_the_benchmark_runs_and_finds_the_states_identical():
    from benchmarks.bench_author_encoding import main

    rows = main(["--shapes", "cpu-default", "--authors", "2", "--blocks", "2", "--block_size", "16", "--repeats", "1",
                 "--handler_authors", "3", "--handler_messages", "4"])
    assert rows[0]["states_identical"] and rows[0]["ratio"] > 0
    assert rows[1]["authors"] == 3 and rows[1]["max_state_difference"] < 1e-4
