"""Inference Endpoints handler for a HuLlama model repository (causal LM or classifier, full or PEFT adapter).

Shipped into the model repo as `handler.py`: Inference Endpoints builds `EndpointHandler(path)` with the repo folder
and calls it with the request's JSON. Self-contained: imports torch and transformers (peft only for adapter repos).

Request:
    {"inputs": [messages of ONE author, oldest first]    (or one string: one message per line;
                                                           task "state" also takes many authors:
                                                           [[messages of author 1], [messages of author 2], ...]),
     "parameters": {
        "task": "state" | "classify" | "generate",       (default: "generate" for a causal LM, "classify" else)
        "author_state": [S floats],                       (optional: the state before the first message,
                                                           e.g. a previous response's "author_state"; for many
                                                           authors a list of them, one per author, or null)
        "authors_per_call": 16,                           (many authors: authors per forward pass)
        "blocks_per_call": 8,                             (blocks per forward pass; the state is carried between)
        "prompt": "text",                                 (generate: the start of the author's next message;
                                                           default: the last input message is the prompt;
                                                           only its last block_size - 1 tokens are read)
        "max_new_tokens": 20, "do_sample": false, "temperature", "top_p", "top_k", "repetition_penalty"}}

Responses:
    state     {"author_state": [S floats], "n_blocks": K, "n_tokens": N}
              many authors: {"authors": [{"author_state": [S floats], "n_blocks": K, "n_tokens": N}, ...]}
    classify  message level: {"level": "message", "scores": [per input message: [{"label", "score"}, ...] best first,
                                                             or null for a message that tokenizes to nothing]}
              author level:  {"level": "author", "scores": [{"label", "score"}, ...]}
    generate  {"generated_text": prompt + continuation, "continuation": "...",
               "author_state": [S floats] the state the continuation was conditioned on (null: the learned initial one)}

Blocks are built as in training: each message's tokens (no special tokens) followed by the separator (the
tokenizer's eos), concatenated into the author's stream; every block is a start token (bos, else the separator)
plus the next block_size - 1 stream tokens.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

TASKS = ("state", "classify", "generate")
PARAMETERS = ("task", "author_state", "blocks_per_call", "authors_per_call", "prompt", "max_new_tokens", "do_sample",
              "temperature", "top_p", "top_k", "repetition_penalty")
SAMPLING = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
DEFAULT_MAX_NEW_TOKENS = 20


def load_model_and_tokenizer(path: str, dtype: Any = "auto"):
    """The model in `path` (classifier or causal LM from config.architectures; a PEFT adapter from
    adapter_config.json's task_type) and its tokenizer, in eval mode on the GPU where there is one."""
    adapter_file = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_file):
        try:
            from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
        except ImportError as error:
            raise ImportError(f"{path} holds a PEFT adapter: install peft to serve it") from error
        with open(adapter_file) as handle:
            adapter = json.load(handle)
        classifier = adapter.get("task_type") == "SEQ_CLS"
        auto = AutoPeftModelForSequenceClassification if classifier else AutoPeftModelForCausalLM
        model = auto.from_pretrained(path, trust_remote_code=True, dtype=dtype)
        tokenizer_source = path if _has_tokenizer(path) else adapter["base_model_name_or_path"]
    else:
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        architectures = getattr(config, "architectures", None) or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            auto = AutoModelForSequenceClassification
        elif any(a.endswith("ForCausalLM") for a in architectures):
            auto = AutoModelForCausalLM
        else:
            raise ValueError(f"{path}: config.architectures={architectures} names neither a causal LM nor a classifier")
        model = auto.from_pretrained(path, trust_remote_code=True, dtype=dtype)
        tokenizer_source = path
    if torch.cuda.is_available():
        model = model.to("cuda")
    # trust_remote_code: AutoTokenizer reads config.json, whose auto_map would otherwise make it ask interactively.
    return model.eval(), AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=True)


def _has_tokenizer(path: str) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    return any(os.path.isfile(os.path.join(path, name)) for name in names)


def _model_kind(model) -> str:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's wrapped model
    return "classifier" if type(inner).__name__.endswith("ForSequenceClassification") else "causal-lm"


@contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


class EndpointHandler:
    """`EndpointHandler(path)(request)`; see the module docstring for the request and response formats."""

    def __init__(self, path: str = "", dtype: Any = "auto"):
        model, tokenizer = load_model_and_tokenizer(path, dtype=dtype)
        self._setup(model, tokenizer)

    @classmethod
    def from_model(cls, model, tokenizer) -> "EndpointHandler":
        """A handler around an already loaded model and tokenizer (used to compute widget outputs)."""
        handler = cls.__new__(cls)
        handler._setup(model, tokenizer)
        return handler

    def _setup(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.config = model.config
        self.kind = _model_kind(model)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token, which HuLlama uses as the message separator")
        self.separator = int(tokenizer.eos_token_id)
        self.start = int(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else self.separator
        self.pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.separator
        self.block_size = int(self.config.block_size)
        self.state_size = int(self.config.state_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------- request

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data, dict) and isinstance(data.get("inputs"), list) and data["inputs"] and all(
                isinstance(author, list) for author in data["inputs"]):
            return self._states_of_many(data)
        messages, params = self._parse(data)
        task = params.get("task") or ("generate" if self.kind == "causal-lm" else "classify")
        state = self._author_state(params.get("author_state"))
        per_call = params.get("blocks_per_call", 8)
        if isinstance(per_call, bool) or not isinstance(per_call, int) or per_call < 1:
            raise ValueError(f"parameters.blocks_per_call must be an integer >= 1, got {per_call!r}")
        with _eval_mode(self.model):
            if task == "state":
                stream, _ = self.stream(messages)
                state, _, n_blocks = self._run(self.blocks(stream), state, per_call)
                return {"author_state": self._floats(state), "n_blocks": n_blocks, "n_tokens": len(stream)}
            if task == "classify":
                return self._classify(messages, state, per_call)
            return self._generate(messages, params, state, per_call)

    def _states_of_many(self, data: dict[str, Any]) -> dict[str, Any]:
        """Task "state" for many authors: their states in batches of `authors_per_call`, each author's blocks in one
        pass, running only the layers the state depends on (`encode_authors`)."""
        authors, params = [], {}
        for messages in data["inputs"]:  # each checked as a one-author request is
            parsed, params = self._parse({**data, "inputs": messages})
            authors.append(parsed)
        if params.get("task", "state") != "state":
            raise ValueError("many authors in one request take task 'state'; send one author per request for the "
                             "other tasks")
        per_call = params.get("authors_per_call", 16)
        if isinstance(per_call, bool) or not isinstance(per_call, int) or per_call < 1:
            raise ValueError(f"parameters.authors_per_call must be an integer >= 1, got {per_call!r}")
        states = params.get("author_state")
        if states is not None and (not isinstance(states, list) or len(states) != len(authors)):
            raise ValueError(f"parameters.author_state must be null or a list of {len(authors)} states, one per author")
        results = []
        with _eval_mode(self.model), torch.no_grad():
            for i in range(0, len(authors), per_call):
                batch = authors[i : i + per_call]
                inputs = self.model.author_inputs(self.tokenizer, batch)
                start = None
                if states is not None:
                    start = torch.cat([self._author_state(state) for state in states[i : i + per_call]])
                mask = inputs["attention_mask"].to(self.device)
                out = self.model.encode_authors(inputs["input_ids"].to(self.device), mask, author_state=start)
                blocks, tokens = out.block_mask.sum(-1).tolist(), mask.sum((-1, -2)).tolist()
                results += [{"author_state": self._floats(out.final_author_state[j : j + 1]), "n_blocks": int(k),
                             "n_tokens": int(n - k)} for j, (k, n) in enumerate(zip(blocks, tokens))]
        return {"authors": results}

    def _parse(self, data: Any) -> tuple[list[str], dict[str, Any]]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError(
                'the request must be a JSON object {"inputs": [messages of one author], "parameters": {...}}'
            )
        inputs = data["inputs"]
        if isinstance(inputs, str):
            messages = [line for line in inputs.splitlines() if line.strip()]
        elif isinstance(inputs, (list, tuple)):
            for i, message in enumerate(inputs):
                if not isinstance(message, str):
                    raise ValueError(f"inputs[{i}] is a {type(message).__name__}: every message must be a string")
            messages = list(inputs)
        else:
            raise ValueError(f"inputs must be a list of strings (an author's messages), got {type(inputs).__name__}")
        if not messages:
            raise ValueError("inputs is empty: send at least one message of the author")
        params = data.get("parameters") or {}
        if not isinstance(params, dict):
            raise ValueError(f"parameters must be a JSON object, got {type(params).__name__}")
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {', '.join(PARAMETERS)}")
        task = params.get("task")
        if task is not None and task not in TASKS:
            raise ValueError(f"parameters.task must be one of {', '.join(TASKS)}, got {task!r}")
        if task == "classify" and self.kind != "classifier":
            raise ValueError("task 'classify' needs a classifier; this repo holds a causal LM (tasks: state, generate)")
        if task == "generate" and self.kind != "causal-lm":
            raise ValueError("task 'generate' needs a causal LM; this repo holds a classifier (tasks: state, classify)")
        return messages, params

    def _author_state(self, value: Any) -> torch.Tensor | None:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value
        ):
            raise ValueError(
                "parameters.author_state must be a list of finite numbers (a previous response's author_state)"
            )
        if len(value) != self.state_size:
            raise ValueError(
                f"parameters.author_state has {len(value)} values; this model's state has {self.state_size}"
            )
        return torch.tensor([list(value)], dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------------------------------ blocks

    def stream(self, messages: list[str]) -> tuple[list[int], list[int | None]]:
        """The author's token stream, and for each message the stream position of its last text token
        (None for a message that tokenizes to nothing, which is left out of the stream, as in training)."""
        encoded = self.tokenizer(list(messages), add_special_tokens=False)["input_ids"]
        stream, ends = [], []
        for tokens in encoded:
            if not tokens:
                ends.append(None)
                continue
            stream.extend(tokens)
            ends.append(len(stream) - 1)
            stream.append(self.separator)
        return stream, ends

    def blocks(self, stream: list[int]) -> list[list[int]]:
        step = self.block_size - 1
        return [[self.start] + stream[i : i + step] for i in range(0, len(stream), step)]

    def locate(self, position: int) -> tuple[int, int]:
        """(block, index inside the block) of a stream position."""
        block, offset = divmod(position, self.block_size - 1)
        return block, offset + 1

    def _tensors(self, blocks: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(b) for b in blocks)
        ids = torch.full((1, len(blocks), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, block in enumerate(blocks):
            ids[0, k, : len(block)] = torch.tensor(block)
            mask[0, k, : len(block)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _run(self, blocks: list[list[int]], state: torch.Tensor | None, per_call: int):
        """Run the blocks `per_call` at a time, carrying the author state; returns (state, outputs, n_blocks)."""
        outputs = []
        extra = {"logits_to_keep": 1} if self.kind == "causal-lm" else {}
        for i in range(0, len(blocks), per_call):
            ids, mask = self._tensors(blocks[i : i + per_call])
            out = self.model(input_ids=ids, attention_mask=mask, author_state=state, **extra)
            state = out.final_author_state
            outputs.append(out)
        return state, outputs, len(blocks)

    # ------------------------------------------------------------------------------------------- tasks

    def _scores(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        logits = logits.float()
        id2label = {int(k): v for k, v in (self.config.id2label or {}).items()}
        if self.config.num_labels == 1 or self.config.problem_type == "regression":
            values = logits
        elif self.config.problem_type == "multi_label_classification":
            values = logits.sigmoid()
        else:
            values = logits.softmax(-1)
        scores = [{"label": id2label.get(i, f"LABEL_{i}"), "score": float(v)} for i, v in enumerate(values.tolist())]
        return sorted(scores, key=lambda s: s["score"], reverse=True)

    def _classify(self, messages, state, per_call) -> dict[str, Any]:
        stream, ends = self.stream(messages)
        if not stream:
            raise ValueError("no message of the input has any token")
        blocks = self.blocks(stream)
        if self.config.classification_level == "author":
            # The author head averages the states of all blocks: one pass over all of them.
            ids, mask = self._tensors(blocks)
            out = self.model(input_ids=ids, attention_mask=mask, author_state=state)
            return {"level": "author", "scores": self._scores(out.logits[0])}
        _, outputs, _ = self._run(blocks, state, per_call)
        scores = []
        for end in ends:
            if end is None:
                scores.append(None)
                continue
            block, index = self.locate(end)
            logits = outputs[block // per_call].logits[0, block % per_call, index]
            scores.append(self._scores(logits))
        return {"level": "message", "scores": scores}

    def _generate(self, messages, params, state, per_call) -> dict[str, Any]:
        prompt = params.get("prompt")
        if prompt is None:
            history, prompt = messages[:-1], messages[-1]
        elif not isinstance(prompt, str):
            raise ValueError(f"parameters.prompt must be a string, got {type(prompt).__name__}")
        else:
            history = messages
        if history:
            stream, _ = self.stream(history)
            if stream:
                state, _, _ = self._run(self.blocks(stream), state, per_call)
        prompt_tokens = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        kept = prompt_tokens[-(self.block_size - 1) :] if len(prompt_tokens) > self.block_size - 1 else prompt_tokens
        max_new = params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        room = self.config.max_position_embeddings - 1 - len(kept)
        if isinstance(max_new, bool) or not isinstance(max_new, int) or not 1 <= max_new <= room:
            raise ValueError(
                f"parameters.max_new_tokens must be an integer in [1, {room}] for this prompt, got {max_new!r}"
            )
        sampling = {k: params[k] for k in SAMPLING if k in params}
        ids = torch.tensor([[self.start] + kept], device=self.device)
        generated = self.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), author_state=state, max_new_tokens=max_new,
            eos_token_id=self.separator, pad_token_id=self.pad, **{"do_sample": False, **sampling},
        )
        new = generated[0, ids.shape[1] :].tolist()
        if self.separator in new:  # the author's message ends at the separator
            new = new[: new.index(self.separator)]
        continuation = self.tokenizer.decode(new, skip_special_tokens=True)
        return {
            "generated_text": self.tokenizer.decode(prompt_tokens + new, skip_special_tokens=True),
            "continuation": continuation,
            "author_state": self._floats(state) if state is not None else None,
        }

    @staticmethod
    def _floats(state: torch.Tensor) -> list[float]:
        return [float(v) for v in state[0].float().tolist()]
