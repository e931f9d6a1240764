"""The model card (metadata, Llama 3 rules, a "How to use" snippet that runs), widget outputs computed by the
model, and the Inference Endpoints handler, all on tiny saved HuLlama models."""

import ast
import re

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from conftest import perturb_state_modules, tiny_hullama_config
from hullama.data.blocks import Plan, layout_author
from hullama.hub_card import (
    check_llama3_naming, compute_widget_examples, copy_handler, llama3_license, render_card, validate_card, write_card,
)
from hullama.hub_card.handler import EndpointHandler
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification

BLOCK = 16
LABELS = {0: "against", 1: "none", 2: "favor"}
AUTHOR = [
    "the author writes about data models and time",
    "I fix bug in the build today",
    "we love numpy array code, always test",
    "clinton vote was not very good",
    "tomorrow I will",
]
EVAL_ROWS = [
    {"task_type": "text-generation", "task_name": "Human language modeling", "dataset_name": "Commit messages",
     "dataset_type": "local/commits", "metric_type": "perplexity", "metric_name": "Perplexity", "metric_value": 31.25,
     "split": "test"},
    {"task_type": "text-classification", "task_name": "Stance", "dataset_name": "Tweets",
     "dataset_type": "local/stance",
     "metric_type": "f1", "metric_name": "Weighted F1", "metric_value": 0.6123},
]



@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory):
    """trust_remote_code copies the model code into a private modules cache, not the user's HF home."""
    import transformers.dynamic_module_utils as dynamic

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf-modules")))
        yield


@pytest.fixture(scope="module")
def repos(tmp_path_factory, tokenizer, modules_cache):
    """Saved tiny repos: causal LM, message- and author-level classifiers, and a LoRA adapter on the causal LM."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("repos")
    torch.manual_seed(0)
    models = {
        "lm": HuLlamaForCausalLM(tiny_hullama_config(block_size=BLOCK)),
        "classifier": HuLlamaForSequenceClassification(
            tiny_hullama_config(block_size=BLOCK, num_labels=3, id2label=LABELS,
                                label2id={v: k for k, v in LABELS.items()})),
        "author-classifier": HuLlamaForSequenceClassification(
            tiny_hullama_config(block_size=BLOCK, num_labels=2, classification_level="author")),
    }
    for name, model in models.items():
        perturb_state_modules(model).eval().save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    base = HuLlamaForCausalLM.from_pretrained(root / "lm")  # name_or_path: the folder, a repo with the code
    peft_model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"],
                                                 modules_to_save=["author_state"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    peft_model.eval().save_pretrained(root / "adapter")
    tokenizer.save_pretrained(root / "adapter")
    return {"root": root, **{name: root / name for name in (*models, "adapter")}, "models": models, "peft": peft_model}


def _training_blocks(tokenizer, messages):
    """Blocks as the training pipeline lays them out (train.blocks), for comparison with the handler's."""
    stream, seps = [], []
    for text in messages:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
        stream.append(tokenizer.eos_token_id)
        seps.append(len(stream) - 1)
    plan = Plan("recurrent", "lm", BLOCK, BLOCK, None, "oldest", tokenizer.eos_token_id, False)
    [row] = layout_author(stream, seps, [float("nan")] * len(messages), [None] * len(messages), plan)
    return row["input_ids"], seps


def _as_tensors(blocks, pad):
    width = max(map(len, blocks))
    ids = torch.full((1, len(blocks), width), pad)
    mask = torch.zeros_like(ids)
    for k, block in enumerate(blocks):
        ids[0, k, : len(block)], mask[0, k, : len(block)] = torch.tensor(block), 1
    return ids, mask


def _front_matter(text):
    return yaml.safe_load(re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL).group(1))


# ------------------------------------------------------------------------------------------------ metadata


def test_full_repo_card_metadata_and_sections(tmp_path):
    training_args = {"learning_rate": 2e-4, "per_device_train_batch_size": 4, "seed": 0, "hub_token": "hf_" + "x" * 30,
                     "report_to": ["tensorboard"], "output_dir": "out|dir"}
    path = write_card(tmp_path, repo_id="me/hullama-smollm2", base_model="HuggingFaceTB/SmolLM2-135M",
                      training_args=training_args, data_summary={"authors kept": 120, "blocks": 960},
                      eval_results=EVAL_ROWS, datasets="me/commits", license="apache-2.0")
    text = path.read_text()
    meta = validate_card(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["me/commits"]
    assert {"custom_code", "human-language-modeling", "arxiv:2603.05928"} <= set(meta["tags"])
    assert not {"peft", "qlora", "llama-3"} & set(meta["tags"])
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "hullama-smollm2" and len(results) == 2
    for row, result in zip(EVAL_ROWS, results):
        for key, value in row.items():
            assert getattr(result, "dataset_split" if key == "split" else key) == value
    for section in ("## Intended use", "## Out-of-scope uses", "## Privacy and demographic factors", "## How to use",
                    "## Training data", "## Training procedure", "## Evaluation", "https://arxiv.org/abs/2603.05928"):
        assert section in text
    assert "No clinical" in text and "personal data" in text and "Not evaluated" not in text
    assert "| Human language modeling | Commit messages | test | Perplexity | 31.25 |" in text
    assert "| Stance | Tweets | - | Weighted F1 | 0.6123 |" in text
    assert "hf_xxx" not in text and "(redacted)" in text and "out\\|dir" in text
    assert "Built with Meta Llama 3" not in text


def test_adapter_classifier_card_without_results():
    card = render_card(repo_id="me/Llama-3-HuLlama-stance", base_model="meta-llama/Llama-3.1-8B", kind="classifier",
                       adapter=True, training_args={"learning_rate": 1e-4, "load_in_4bit": True},
                       data_summary="data report: tweets\n  authors : 10 kept")
    meta = validate_card(card)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-classification"
    assert {"peft", "lora", "qlora", "custom_code", "llama-3"} <= set(meta["tags"])
    assert meta["license"] == "llama3.1" and "model-index" not in meta and "widget" not in meta
    assert "**Not evaluated.**" in card.text and "Built with Meta Llama 3" in card.text
    assert "AutoPeftModelForSequenceClassification" in card.text and "data report: tweets" in card.text
    assert card.data.library_name == "peft"  # huggingface_hub's own parse agrees


def test_llama3_licence_rules():
    assert llama3_license("meta-llama/Meta-Llama-3-8B") == "llama3"
    assert llama3_license("meta-llama/Llama-3.1-8B-Instruct") == "llama3.1"
    assert llama3_license(["x/y", "unsloth/llama-3-8b-bnb-4bit"]) == "llama3"
    assert llama3_license("huggyllama/llama-30b") is None and llama3_license("HuggingFaceTB/SmolLM2-135M") is None
    check_llama3_naming("me/Llama-3-HuLlama-8B", "meta-llama/Meta-Llama-3-8B")
    check_llama3_naming("me/hullama-small", "HuggingFaceTB/SmolLM2-135M")
    for bad in ("me/HuLlama-8B", "me/llama-3-hullama"):
        with pytest.raises(ValueError, match="to begin with 'Llama-3'"):
            check_llama3_naming(bad, "meta-llama/Meta-Llama-3-8B")
    with pytest.raises(ValueError, match="to begin with 'Llama-3'"):
        render_card(repo_id="me/HuLlama-8B", base_model="meta-llama/Meta-Llama-3-8B")
    with pytest.raises(ValueError, match="llama3 licence"):
        render_card(repo_id="me/Llama-3-HuLlama-8B", base_model="meta-llama/Meta-Llama-3-8B", license="apache-2.0")
    card = render_card(repo_id="me/Llama-3-HuLlama-8B", base_model="meta-llama/Meta-Llama-3-8B")
    assert card.data.license == "llama3" and "**Built with Meta Llama 3**" in card.text


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "regressor"}, "kind must be one of"),
    ({"base_model": "/models/llama"}, "not a local path"),
    ({"eval_results": [{"task_type": "x", "metric_value": 1.0}]}, "lacks"),
    ({"eval_results": [{**EVAL_ROWS[0], "accuracy": 1}]}, "unknown keys"),
    ({"eval_results": [{**EVAL_ROWS[0], "metric_value": float("nan")}]}, "finite number"),
    ({"widget": [{"text": "a\nb"}]}, "no 'output'"),
    ({"widget": [{"text": "a", "output": [{"label": "x", "score": 1.0}]}]}, "for text-generation"),
])
def test_bad_card_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_card(**{"repo_id": "me/hullama", "base_model": "HuggingFaceTB/SmolLM2-135M", **kwargs})


def test_validate_card_rejects_malformed_metadata():
    good = str(render_card(repo_id="me/hullama", base_model="HuggingFaceTB/SmolLM2-135M", eval_results=EVAL_ROWS[:1]))
    broken_index = good.replace("    - type: perplexity\n", "    - name: perplexity\n")
    with pytest.raises(ValueError, match="metrics\\[0\\] needs a string 'type'"):
        validate_card(broken_index)
    with pytest.raises(ValueError, match="library_name"):
        validate_card(good.replace("library_name: transformers", "library_name: keras"))
    with pytest.raises(ValueError, match="front matter"):
        validate_card("# no metadata")


# --------------------------------------------------------------------------------------- How to use snippet

def test_how_to_use_snippets_run_against_saved_models(repos, capsys):
    cases = {"lm": ("causal-lm", False), "adapter": ("causal-lm", True), "classifier": ("classifier", False),
             "author-classifier": ("classifier", False)}
    for name, (kind, adapter) in cases.items():
        repo_id = f"me/hullama-tiny-{name}"
        card = render_card(repo_id=repo_id, base_model="HuggingFaceTB/SmolLM2-135M", kind=kind, adapter=adapter)
        how_to_use = card.text.split("## How to use", 1)[1]
        code = re.search(r"```python\n(.*?)```", how_to_use, re.DOTALL).group(1)
        assert f'repo = "{repo_id}"' in code and "trust_remote_code=True" in code
        # What a user runs: only torch, transformers and peft; the HuLlama code comes from the repo folder.
        assert set(re.findall(r"^(?:from|import) (\w+)", code, re.MULTILINE)) <= {"torch", "transformers", "peft"}
        capsys.readouterr()
        exec(compile(code.replace(repo_id, str(repos[name])), f"how-to-use-{name}", "exec"), {"__name__": "__main__"})
        out = capsys.readouterr().out.strip().splitlines()
        if kind == "causal-lm":
            assert out[0].startswith("perplexity on the recent messages:") and float(out[0].split(":")[1]) > 1
        elif name == "classifier":  # one line per message: label, probability, text
            assert len(out) == 3 and all(line.split()[0] in LABELS.values() for line in out)
        else:  # author level: one dict of label probabilities
            assert len(out) == 1 and set(ast.literal_eval(out[0])) == {"LABEL_0", "LABEL_1"}


# ------------------------------------------------------------------------------------------------- widget


def test_widget_outputs_are_what_the_model_produces(repos, tokenizer):
    lm = repos["models"]["lm"]
    examples = [{"example_title": "Author A", "messages": AUTHOR}, {"messages": AUTHOR[:2]}]
    widget = compute_widget_examples(lm, tokenizer, examples, max_new_tokens=8)
    assert widget[0]["example_title"] == "Author A" and widget[0]["text"] == "\n".join(AUTHOR)
    for example, entry in zip(examples, widget):  # recomputed here: history -> state, greedy from the prompt
        *history, prompt = example["messages"]
        blocks, _ = _training_blocks(tokenizer, history)
        with torch.no_grad():
            state = lm(*_as_tensors(blocks, tokenizer.pad_token_id)).final_author_state
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([[tokenizer.eos_token_id] + prompt_ids])
            new = lm.generate(ids, attention_mask=torch.ones_like(ids), author_state=state, max_new_tokens=8,
                              do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        new = new[0, ids.shape[1]:].tolist()
        new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
        assert entry["output"] == {"text": tokenizer.decode(prompt_ids + new, skip_special_tokens=True)}

    classifier = repos["models"]["classifier"]
    [entry] = compute_widget_examples(classifier, tokenizer, [{"example_title": "c", "messages": AUTHOR}])
    blocks, seps = _training_blocks(tokenizer, AUTHOR)
    with torch.no_grad():
        logits = classifier(*_as_tensors(blocks, tokenizer.pad_token_id)).logits
    k, t = divmod(seps[-1] - 1, BLOCK - 1)
    probs = logits[0, k, t + 1].softmax(-1).tolist()
    assert entry["output"] == sorted(({"label": LABELS[i], "score": p} for i, p in enumerate(probs)),
                                     key=lambda s: -s["score"])

    card = render_card(repo_id="me/hullama-tiny", base_model="HuggingFaceTB/SmolLM2-135M", widget=widget)
    assert _front_matter(str(card))["widget"] == widget  # the metadata holds exactly the computed outputs
    card = render_card(repo_id="me/hullama-tiny", base_model="HuggingFaceTB/SmolLM2-135M", kind="classifier",
                       widget=[entry])
    assert ModelCard(str(card)).data.widget == [entry]
    with pytest.raises(ValueError, match="line break"):
        compute_widget_examples(lm, tokenizer, [{"messages": ["two\nlines"]}])


# ------------------------------------------------------------------------------------------------ handler


def test_handler_state_and_generate(repos, tokenizer):
    handler = EndpointHandler(str(repos["lm"]))
    assert handler.kind == "causal-lm"
    blocks, _ = _training_blocks(tokenizer, AUTHOR)
    assert handler.blocks(handler.stream(AUTHOR)[0]) == blocks  # laid out exactly as in training
    state = handler({"inputs": AUTHOR, "parameters": {"task": "state"}})
    with torch.no_grad():
        expected = repos["models"]["lm"](*_as_tensors(blocks, tokenizer.pad_token_id)).final_author_state[0]
    assert state["n_blocks"] == len(blocks) > 2 and len(state["author_state"]) == handler.state_size
    torch.testing.assert_close(torch.tensor(state["author_state"]), expected)
    chunked = handler({"inputs": AUTHOR, "parameters": {"task": "state", "blocks_per_call": 1}})
    torch.testing.assert_close(torch.tensor(chunked["author_state"]), expected, atol=1e-5, rtol=1e-5)
    # The state of the first messages, passed back in, continues the author (a new call starts a new block).
    first = handler({"inputs": "\n".join(AUTHOR[:2]), "parameters": {"task": "state"}})
    continued = handler({"inputs": AUTHOR[2:], "parameters": {"task": "state", "author_state": first["author_state"]}})
    fresh = handler({"inputs": AUTHOR[2:], "parameters": {"task": "state"}})
    assert continued["author_state"] != fresh["author_state"]

    generated = handler({"inputs": AUTHOR, "parameters": {"max_new_tokens": 6}})
    assert generated["generated_text"].startswith(AUTHOR[-1]) and isinstance(generated["continuation"], str)
    history_state = handler({"inputs": AUTHOR[:-1], "parameters": {"task": "state"}})["author_state"]
    assert generated["author_state"] == history_state
    prompted = handler({"inputs": AUTHOR, "parameters": {"task": "generate", "prompt": "I", "max_new_tokens": 6}})
    assert prompted["generated_text"].startswith("I") and prompted["author_state"] == state["author_state"]


@pytest.mark.parametrize("repo", ["lm", "adapter"])
def test_handler_states_of_many_authors_equal_one_author_at_a_time(repos, repo):
    handler = EndpointHandler(str(repos[repo]))
    authors = [AUTHOR, AUTHOR[:2], ["only one message"], list(reversed(AUTHOR)), AUTHOR[1:]]
    alone = [handler({"inputs": a, "parameters": {"task": "state"}}) for a in authors]
    for per_call in (16, 2):  # batches of every size, the last one shorter
        many = handler({"inputs": authors, "parameters": {"task": "state", "authors_per_call": per_call}})["authors"]
        assert len(many) == len(authors)
        for got, want in zip(many, alone):
            assert (got["n_blocks"], got["n_tokens"]) == (want["n_blocks"], want["n_tokens"])
            torch.testing.assert_close(torch.tensor(got["author_state"]), torch.tensor(want["author_state"]),
                                       rtol=1e-5, atol=1e-5)
    # stored states continue each author, as one-author requests do
    starts = [a["author_state"] for a in alone]
    continued = handler({"inputs": authors, "parameters": {"task": "state", "author_state": starts}})["authors"]
    one = handler({"inputs": authors[0], "parameters": {"task": "state", "author_state": starts[0]}})
    torch.testing.assert_close(torch.tensor(continued[0]["author_state"]), torch.tensor(one["author_state"]),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="take task 'state'"):
        handler({"inputs": authors, "parameters": {"task": "generate"}})
    with pytest.raises(ValueError, match="one per author"):
        handler({"inputs": authors, "parameters": {"task": "state", "author_state": starts[:2]}})


def test_handler_classifiers(repos, tokenizer):
    handler = EndpointHandler(str(repos["classifier"]))
    response = handler({"inputs": AUTHOR + [""]})  # default task for a classifier: classify
    assert response["level"] == "message" and len(response["scores"]) == len(AUTHOR) + 1
    assert response["scores"][-1] is None  # a message without tokens is not in the stream, as in training
    for scores in response["scores"][:-1]:
        assert {s["label"] for s in scores} == set(LABELS.values())
        assert abs(sum(s["score"] for s in scores) - 1) < 1e-5 and scores[0]["score"] >= scores[-1]["score"]
    chunked = handler({"inputs": AUTHOR, "parameters": {"blocks_per_call": 1}})
    for a, b in zip(chunked["scores"], response["scores"]):
        assert [s["label"] for s in a] == [s["label"] for s in b]
    assert len(handler({"inputs": AUTHOR, "parameters": {"task": "state"}})["author_state"]) == handler.state_size

    author = EndpointHandler(str(repos["author-classifier"]))({"inputs": AUTHOR})
    assert author["level"] == "author" and {s["label"] for s in author["scores"]} == {"LABEL_0", "LABEL_1"}


def test_handler_loads_adapter_repo(repos, tokenizer):
    handler = EndpointHandler(str(repos["adapter"]))
    assert handler.kind == "causal-lm" and type(handler.model).__name__ == "PeftModelForCausalLM"
    blocks, _ = _training_blocks(tokenizer, AUTHOR)
    with torch.no_grad():
        expected = repos["peft"](*_as_tensors(blocks, tokenizer.pad_token_id)).final_author_state[0]
        base = repos["models"]["lm"](*_as_tensors(blocks, tokenizer.pad_token_id)).final_author_state[0]
    state = torch.tensor(handler({"inputs": AUTHOR, "parameters": {"task": "state"}})["author_state"])
    torch.testing.assert_close(state, expected)
    assert not torch.allclose(state, base)  # the adapter is applied
    assert isinstance(handler({"inputs": AUTHOR, "parameters": {"max_new_tokens": 4}})["generated_text"], str)


@pytest.mark.parametrize("request_, message", [
    ({}, "must be a JSON object"),
    ({"inputs": []}, "inputs is empty"),
    ({"inputs": "  \n "}, "inputs is empty"),
    ({"inputs": ["fine", 3]}, r"inputs\[1\] is a int"),
    ({"inputs": {"text": "x"}}, "must be a list of strings"),
    ({"inputs": ["x"], "parameters": "state"}, "parameters must be a JSON object"),
    ({"inputs": ["x"], "parameters": {"task": "summarize"}}, "must be one of state, classify, generate"),
    ({"inputs": ["x"], "parameters": {"task": "classify"}}, "needs a classifier"),
    ({"inputs": ["x"], "parameters": {"temprature": 1.0}}, "unknown parameters"),
    ({"inputs": ["x"], "parameters": {"author_state": [0.1, 0.2]}}, "has 2 values; this model's state has 64"),
    ({"inputs": ["x"], "parameters": {"author_state": ["a"] * 64}}, "list of finite numbers"),
    ({"inputs": ["x"], "parameters": {"max_new_tokens": 1000}}, "max_new_tokens must be an integer in"),
    ({"inputs": ["x"], "parameters": {"blocks_per_call": 0}}, "blocks_per_call"),
    ({"inputs": ["x"], "parameters": {"prompt": 5}}, "prompt must be a string"),
])
def test_handler_bad_requests(repos, request_, message):
    handler = EndpointHandler.from_model(repos["models"]["lm"], _tokenizer_of(repos["lm"]))
    with pytest.raises(ValueError, match=message):
        handler(request_)


def test_handler_rejects_generate_on_classifier_and_is_copied(repos, tokenizer, tmp_path):
    handler = EndpointHandler.from_model(repos["models"]["classifier"], tokenizer)
    with pytest.raises(ValueError, match="needs a causal LM"):
        handler({"inputs": ["x"], "parameters": {"task": "generate"}})
    copied = copy_handler(tmp_path)
    assert copied.read_text().startswith('"""Inference Endpoints handler')
    imports = re.findall(r"^(?:from|import) (\w+)", copied.read_text(), re.MULTILINE)
    assert set(imports) <= {"__future__", "json", "math", "os", "contextlib", "typing", "torch", "transformers"}


def _tokenizer_of(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=True)


def test_the_architecture_line_names_the_models_mechanism():
    lines = {m: next(line for line in str(render_card(repo_id="me/hullama", base_model="HuggingFaceTB/SmolLM2-135M",
                                                      state_mechanism=m)).splitlines() if "**Architecture:**" in line)
             for m in ("query", "gate", "memory")}
    assert "attention query" in lines["query"] and "tanh-gated residual" in lines["gate"]
    assert "memory slots" in lines["memory"] and len(set(lines.values())) == 3
    def card(**fields):
        return str(render_card(repo_id="me/hullama", base_model="HuggingFaceTB/SmolLM2-135M", **fields))

    assert "U_k = tanh(RMSNorm(W_u U_{k-1} + W_h h_k))" in card()
    assert "U_k = tanh(W_u U_{k-1} + W_h h_k)" in card(normalize_state_update=False)


def test_a_card_names_files_not_the_local_paths_they_were_read_from():
    folder = "/home/someone/private/corpora"
    card = str(render_card(
        repo_id="me/hullama-test", base_model=None, data_summary=f"data report: {folder}/authors.jsonl [train]",
        training_args={"output_dir": f"{folder}/out", "learning_rate": 0.001},
        eval_results=[{"task_type": "text-generation", "task_name": "HuLM", "dataset_name": f"{folder}/a.jsonl",
                       "dataset_type": "author-corpus", "metric_type": "perplexity", "metric_name": "perplexity",
                       "metric_value": 5.0}],
    ))
    assert "someone" not in card and "authors.jsonl" in card and "a.jsonl" in card
