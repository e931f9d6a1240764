"""Frozen-model plumbing shared by `eval/perplexity.py` and `eval/probe.py`.

- `load_model`: a checkpoint (HuLlama or plain Llama, optionally a PEFT adapter on top) and its tokenizer,
  from local paths only.
- `model_parts`: the decoder ("backbone") and LM head of a model, also under PEFT, and whether it is HuLlama
  (takes `[authors, blocks, tokens]` input and returns author states).
- `message_features` / `author_features`: features for linear probes, extracted once with the model frozen:
    message: the hidden state at the last text token of each labelled message, read either in the author's
             recurrent timeline (HuLlama), with earlier messages as plain context (`in_context`), or from the
             message alone (`none`, what a plain Llama sees);
    author : the mean author state over the author's real blocks (HuLlama), and/or the mean over the author's
             messages, each read alone, of the hidden state at the message's last token (its separator; a message
             longer than a block counts once per piece) ("messages", any model).
  `layer` picks the hidden state in transformers' `hidden_states` convention: 0 = the embeddings, i = the output
  of decoder layer i, -1 = the last entry (the final layer after the final norm, `last_hidden_state`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hullama.data.blocks import IGNORE_INDEX, build_blocks
from hullama.data.corpus import Corpus
from hullama.eval.commands import AUTHOR_SOURCES, DTYPE_NAMES, MESSAGE_CONTEXTS

DTYPES = dict(zip(DTYPE_NAMES, ("auto", torch.float32, torch.bfloat16, torch.float16)))


# ------------------------------------------------------------------------------------------------ models


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str | Path, *, adapter: str | Path | None = None, tokenizer: str | Path | None = None,
               as_hullama: bool = False, dtype: str = "auto", device: str | None = None):
    """(model, tokenizer) from local folders, in eval mode on `device`.

    A HuLlama checkpoint (config model_type "hullama") loads with the repository's HuLlamaForCausalLM; a plain
    Llama one with AutoModelForCausalLM, or into HuLlamaForCausalLM with `as_hullama` (new modules at their
    initial values: the state path adds nothing until trained). `adapter`: a PEFT adapter folder applied on top.
    `tokenizer`: a folder holding the tokenizer (default: the model folder).
    Raises FileNotFoundError naming the missing folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    for what, folder in (("model", path), ("adapter", adapter), ("tokenizer", tokenizer)):
        if folder is not None and not Path(folder).exists():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in the model folder {path}")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if model_type == "hullama" or as_hullama:
        from modeling_hullama import HuLlamaForCausalLM

        model = HuLlamaForCausalLM.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer also reads a HuLlama config.json and warns about its type
    try:  # the tokenizer files suffice: never run (or ask to run) a folder's remote code
        tok = AutoTokenizer.from_pretrained(str(tokenizer or path), trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.to(device or default_device()).eval()
    return model, tok


@dataclass
class ModelParts:
    model: torch.nn.Module  # the causal LM (PEFT unwrapped; adapters stay injected in its layers)
    backbone: torch.nn.Module  # the decoder returning last_hidden_state (HuLlamaModel, LlamaModel, ...)
    head: torch.nn.Module | None  # the LM head, None for a bare decoder
    hullama: bool  # takes [B, K, T] input and an author state
    ablate_kwarg: str | None  # name of a forward kwarg that zeroes the state's effect, if the model has one

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device


def model_parts(model: torch.nn.Module) -> ModelParts:
    """The pieces evaluation runs: PEFT is unwrapped (get_base_model), the decoder is `base_model`."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, "base_model", inner)
    head = inner.get_output_embeddings() if backbone is not inner else None
    params = inspect.signature(backbone.forward).parameters
    ablate = next((name for name in ("ablate_state",) if name in params), None)
    hullama = "author_state" in params or isinstance(getattr(backbone, "author_state", None), torch.nn.Module)
    return ModelParts(inner, backbone, head, hullama, ablate)


def run_backbone(parts: ModelParts, batch: dict[str, torch.Tensor], *, layer: int = -1, **kwargs: Any):
    """Forward the decoder on a collated batch; returns (hidden at `layer`, model outputs)."""
    device = parts.device
    want_all = layer not in (-1, None)
    out = parts.backbone(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         use_cache=False, output_hidden_states=want_all, **kwargs)
    hidden = out.hidden_states[layer] if want_all else out.last_hidden_state
    return hidden, out


def recurrent_chunks(parts: ModelParts, batch: dict[str, torch.Tensor], *, blocks_per_forward: int | None = None,
                     layer: int = -1, **kwargs: Any):
    """Run a recurrent batch `[B, K, T]` in chunks of `blocks_per_forward` blocks, the author state carried from
    chunk to chunk (`author_state=final_author_state`: the same computation as one call, bounded memory).

    Yields (first block index k0, hidden at `layer` `[B, k, T, H]`, model outputs) per chunk.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    step = blocks_per_forward or ids.shape[1]
    state = None  # the first chunk starts from the learned initial state
    for k0 in range(0, ids.shape[1], step):
        chunk = {"input_ids": ids[:, k0 : k0 + step], "attention_mask": mask[:, k0 : k0 + step]}
        hidden, out = run_backbone(parts, chunk, layer=layer, author_state=state, **kwargs)
        state = out.final_author_state
        yield k0, hidden, out


def _batches(rows: list[dict], batch_size: int):
    for start in range(0, len(rows), batch_size):
        yield rows[start : start + batch_size]


def _resolve_context(parts: ModelParts, context: str) -> str:
    if context not in MESSAGE_CONTEXTS:
        raise ValueError(f"message context must be one of {MESSAGE_CONTEXTS}, got {context!r}")
    if context == "auto":
        return "recurrent" if parts.hullama else "none"
    if context == "recurrent" and not parts.hullama:
        raise ValueError("the recurrent message context needs a HuLlama model (a plain Llama has no author state)")
    return context


def _last_real(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[R, T, H] -> [R, H]: the hidden state at each row's last real token (right padding)."""
    last = mask.long().sum(-1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


# ---------------------------------------------------------------------------------------------- features


@dataclass
class Features:
    """X [N, D] float32; y [N] (class ids or floats); ids: message ids (message level) or user ids (author level);
    user_ids: the author of each row."""

    X: np.ndarray
    y: np.ndarray
    ids: list[str]
    user_ids: list[str]
    description: str


@torch.inference_mode()
def message_features(model: torch.nn.Module, tokenizer: Any, corpus: Corpus, *, context: str = "auto",
                     layer: int = -1, block_size: int = 256, max_blocks: int | None = None, batch_size: int = 4,
                     blocks_per_forward: int | None = 16, progress: bool = True) -> Features:
    """Hidden state at the last text token of every labelled message of a message-task corpus (see module doc).

    batch_size: authors (recurrent) or rows per forward; blocks_per_forward: recurrent blocks per forward, the
    state carried between chunks (None: all of an author's blocks at once)."""
    from tqdm.auto import tqdm

    if corpus.task != "message":
        raise ValueError(f"message features need a corpus loaded with task='message' (this one: {corpus.task!r})")
    parts = model_parts(model)
    variant = _resolve_context(parts, context)
    data = build_blocks(corpus, tokenizer, variant=variant, task="message", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows = data.dataset.to_list()
    collate = data.collator()
    xs, ys, ids, users = [], [], [], []
    for chunk in tqdm(list(_batches(rows, batch_size)), desc=f"message features ({variant})", disable=not progress):
        batch = collate(chunk)
        if variant == "recurrent":
            per_author: list[list[torch.Tensor]] = [[] for _ in chunk]
            for k0, hidden, _ in recurrent_chunks(parts, batch, blocks_per_forward=blocks_per_forward, layer=layer):
                labels = batch["labels"][:, k0 : k0 + hidden.shape[1]].to(hidden.device)
                for a in range(len(chunk)):
                    per_author[a].append(hidden[a][labels[a] != IGNORE_INDEX].float().cpu())  # stream order
            for a, row in enumerate(chunk):
                where = batch["labels"][a] != IGNORE_INDEX
                found = torch.cat(per_author[a])
                if len(found) != len(row["message_ids"]):
                    raise RuntimeError(f"author {row['user_id']}: {len(found)} labelled positions for "
                                       f"{len(row['message_ids'])} labelled messages")
                xs.append(found)
                ys.extend(batch["labels"][a][where].tolist())
                ids.extend(row["message_ids"])
                users.extend([row["user_id"]] * len(row["message_ids"]))
        else:
            hidden, _ = run_backbone(parts, batch, layer=layer)
            xs.append(_last_real(hidden, batch["attention_mask"]).float().cpu())
            ys.extend(batch["labels"].tolist())
            ids.extend(r["message_id"] for r in chunk)
            users.extend(r["user_id"] for r in chunk)
    X = torch.cat(xs).numpy() if xs else np.zeros((0, 0), np.float32)
    y = np.asarray(ys, dtype=np.float64 if corpus.regression else np.int64)
    return Features(X, y, ids, users, f"message: {variant} context, layer {layer}, last text token")


@torch.inference_mode()
def author_features(model: torch.nn.Module, tokenizer: Any, corpus: Corpus, *, source: str = "auto",
                    layer: int = -1, block_size: int = 256, max_blocks: int | None = None, batch_size: int = 4,
                    blocks_per_forward: int | None = 16, progress: bool = True) -> Features:
    """One feature vector per author of an author-task corpus (see module doc); `source`: auto (state for
    HuLlama, messages otherwise), state, messages, or state+messages (concatenated)."""
    if corpus.task != "author":
        raise ValueError(f"author features need a corpus loaded with task='author' (this one: {corpus.task!r})")
    if source not in AUTHOR_SOURCES:
        raise ValueError(f"author feature source must be one of {AUTHOR_SOURCES}, got {source!r}")
    parts = model_parts(model)
    if source == "auto":
        source = "state" if parts.hullama else "messages"
    if "state" in source and not parts.hullama:
        raise ValueError("author-state features need a HuLlama model (a plain Llama has no author state)")
    blocks = []
    common = dict(block_size=block_size, max_blocks=max_blocks, batch_size=batch_size, progress=progress)
    if "state" in source:
        blocks.append(_state_features(parts, tokenizer, corpus, blocks_per_forward=blocks_per_forward, **common))
    if "messages" in source:
        blocks.append(_pooled_message_features(parts, tokenizer, corpus, layer=layer, **common))
    users = [u for u in blocks[0] if all(u in b for b in blocks[1:])]  # {user: vector} each, in corpus order
    X = np.concatenate([np.stack([b[u] for u in users]) for b in blocks], axis=1)
    label = dict(zip(corpus.frame["user_id"], corpus.frame["label"]))
    y = np.asarray([label[u] for u in users], dtype=np.float64 if corpus.regression else np.int64)
    what = {"state": "mean author state over real blocks",
            "messages": f"mean over messages of layer {layer} at each message's last token"}
    return Features(X, y, users, users, "author: " + " + ".join(what[s] for s in source.split("+")))


def _state_features(parts, tokenizer, corpus, *, block_size, max_blocks, batch_size, blocks_per_forward, progress):
    from tqdm.auto import tqdm

    data = build_blocks(corpus, tokenizer, variant="recurrent", task="author", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows = data.dataset.to_list()
    collate = data.collator()
    users, xs = [], []
    for chunk in tqdm(list(_batches(rows, batch_size)), desc="author states", disable=not progress):
        total, count = 0.0, 0.0
        for _, _, out in recurrent_chunks(parts, collate(chunk), blocks_per_forward=blocks_per_forward):
            real = out.block_mask.unsqueeze(-1).float()
            total, count = total + (out.author_states.float() * real).sum(1), count + real.sum(1)
        xs.append((total / count.clamp(min=1)).cpu())
        users.extend(r["user_id"] for r in chunk)
    return dict(zip(users, torch.cat(xs).numpy()))


def _pooled_message_features(parts, tokenizer, corpus, *, layer, block_size, max_blocks, batch_size, progress):
    from tqdm.auto import tqdm

    data = build_blocks(corpus, tokenizer, variant="none", task="author", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows = data.dataset.to_list()
    collate = data.collator()
    order = list(dict.fromkeys(r["user_id"] for r in rows))
    index = {u: i for i, u in enumerate(order)}
    sums, counts = None, np.zeros(len(order))
    for chunk in tqdm(list(_batches(rows, batch_size)), desc="message features (pooled)", disable=not progress):
        batch = collate(chunk)
        hidden, _ = run_backbone(parts, batch, layer=layer)
        feats = _last_real(hidden, batch["attention_mask"]).float().cpu().numpy()
        if sums is None:
            sums = np.zeros((len(order), feats.shape[1]))
        rows_of = np.asarray([index[r["user_id"]] for r in chunk])
        np.add.at(sums, rows_of, feats)
        np.add.at(counts, rows_of, 1)
    return dict(zip(order, (sums / counts[:, None]).astype(np.float32)))
