"""Frozen-model plumbing shared by `eval/perplexity.py` and `eval/probe.py`.

- `load_model`: a checkpoint (HuLlama or plain Llama, optionally a PEFT adapter on top) and its tokenizer,
  from local paths only.
- `model_parts`: the decoder ("backbone") and LM head of a model, also under PEFT, and whether it is HuLlama
  (takes `[authors, blocks, tokens]` input and returns author states).
- `message_features` / `author_features`: feature candidates for linear probes (a `FeatureSet`), extracted once
  with the model frozen, at every layer of `layers`:
    message: at the labelled message's last text token, and the mean over its text tokens (`MessagePooling`), the
             message read either in the author's recurrent timeline (HuLlama), with earlier messages as plain
             context (`in_context`), or alone (`none`, what a plain Llama sees);
    author : the mean over the author's messages, each read alone, of the hidden state at the message's last token
             (its separator, which has read the whole message) and of the mean over its text tokens (a message
             longer than a block counts once per piece); for HuLlama also the author state after the last block,
             the mean state over the real blocks, and that mean beside each message candidate.
  `layers` are indices in transformers' `hidden_states` convention: 0 = the embeddings, i = the output of decoder
  layer i (the last, num_hidden_layers, after the final norm), -1 = the last; by default every layer
  (`default_layers`: 8 of them, evenly spaced, in a deeper model).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hullama.data.blocks import IGNORE_INDEX, build_blocks, resolve_separator
from hullama.data.corpus import Corpus
from hullama.eval.commands import DTYPE_NAMES, MESSAGE_CONTEXTS

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
    from transformers import AutoModelForCausalLM

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
    from hullama.data.tokenizer import auto_tokenizer

    # the tokenizer files suffice: never run (or ask to run) a folder's remote code
    tok = auto_tokenizer(tokenizer or path, trust_remote_code=False)
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


def run_backbone(parts: ModelParts, batch: dict[str, torch.Tensor], *, layers: Sequence[int] | None = None,
                 **kwargs: Any):
    """Forward the decoder on a collated batch; returns ({layer: hidden}, model outputs): the hidden states at
    `layers` (transformers' `hidden_states` indices; None: only the last, -1)."""
    device = parts.device
    layers = list(layers) if layers is not None else [-1]
    want_all = any(layer != -1 for layer in layers)
    out = parts.backbone(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         use_cache=False, output_hidden_states=want_all, **kwargs)
    hidden = {layer: out.hidden_states[layer] if want_all else out.last_hidden_state for layer in layers}
    return hidden, out


def recurrent_chunks(parts: ModelParts, batch: dict[str, torch.Tensor], *, blocks_per_forward: int | None = None,
                     layers: Sequence[int] | None = None, **kwargs: Any):
    """Run a recurrent batch `[B, K, T]` in chunks of `blocks_per_forward` blocks, the author state carried from
    chunk to chunk (`author_state=final_author_state`: the same computation as one call, bounded memory).

    Yields (first block index k0, {layer: hidden `[B, k, T, H]`}, model outputs) per chunk.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    step = blocks_per_forward or ids.shape[1]
    state = None  # the first chunk starts from the learned initial state
    for k0 in range(0, ids.shape[1], step):
        chunk = {"input_ids": ids[:, k0 : k0 + step], "attention_mask": mask[:, k0 : k0 + step]}
        hidden, out = run_backbone(parts, chunk, layers=layers, author_state=state, **kwargs)
        state = out.final_author_state
        yield k0, hidden, out


def _batches(rows: list[dict], batch_size: int):
    for start in range(0, len(rows), batch_size):
        yield rows[start : start + batch_size]


def resolve_message_context(parts: ModelParts, context: str) -> str:
    """How `message_features` reads a message for this model ('auto' resolved); ValueError for a bad one."""
    if context not in MESSAGE_CONTEXTS:
        raise ValueError(f"message context must be one of {MESSAGE_CONTEXTS}, got {context!r}")
    if context == "auto":
        return "recurrent" if parts.hullama else "none"
    if context == "recurrent" and not parts.hullama:
        raise ValueError("the recurrent message context needs a HuLlama model (a plain Llama has no author state)")
    return context


def default_layers(num_layers: int, most: int = 8) -> list[int]:
    """The hidden-state indices a feature search tries: every decoder layer's output (1 .. num_layers, the last
    after the final norm), or `most` of them evenly spaced, the last included, for a deeper model."""
    if num_layers <= most:
        return list(range(1, num_layers + 1))
    return sorted({round(num_layers * (i + 1) / most) for i in range(most)})


def resolve_layers(parts: ModelParts, layers: Sequence[int] | None) -> list[int]:
    """`layers` as non-negative hidden-state indices (default: `default_layers`); ValueError names a bad one."""
    count = parts.model.config.num_hidden_layers
    if layers is None:
        return default_layers(count)
    resolved = []
    for layer in layers:
        if not -(count + 1) <= layer <= count:
            raise ValueError(f"layer {layer} is out of range: the model has hidden states 0 to {count} "
                             f"(or -{count + 1} to -1 from the end)")
        resolved.append(layer % (count + 1))
    return list(dict.fromkeys(resolved))


class MessagePooling:
    """The last token and the mean over the tokens of messages along one author's token stream, read in pieces
    (the chunks of a recurrent author, in order; a row of any other context is one piece).

    A message's tokens are those after the previous separator; separators themselves are left out of the mean. A
    message cut by a piece boundary continues in the next piece (the running sum and count are carried)."""

    def __init__(self, separator_id: int):
        self.separator_id = separator_id
        self.carried: tuple[torch.Tensor, torch.Tensor] | None = None

    def pool(self, ids: torch.Tensor, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [n], hidden [n, D] (text tokens in stream order), positions [m] (indices of message ends) ->
        (last [m, D], mean [m, D])."""
        hidden, positions = hidden.float(), torch.as_tensor(positions, dtype=torch.long)
        separator = ids == self.separator_id
        segment = torch.cumsum(separator.long(), 0) - separator.long()  # separators strictly before each token
        n_segments = int(segment[-1]) + 1 if len(ids) else 1
        keep = ~separator
        sums = hidden.new_zeros(n_segments, hidden.shape[-1]).index_add_(0, segment[keep], hidden[keep])
        counts = hidden.new_zeros(n_segments).index_add_(0, segment[keep], hidden.new_ones(int(keep.sum())))
        if self.carried is not None:
            sums[0] += self.carried[0]
            counts[0] += self.carried[1]
        # the next piece continues this piece's last message, unless this piece ended on its separator
        self.carried = None if len(ids) and separator[-1] else (sums[-1], counts[-1])
        which = segment[positions]
        return hidden[positions], sums[which] / counts[which].clamp(min=1)[:, None]


POOLINGS = ("last", "mean")


def _candidate(layer: int, pooling: str) -> str:
    return f"layer {layer}, {'last token' if pooling == 'last' else 'mean of tokens'}"


# ---------------------------------------------------------------------------------------------- features


@dataclass
class FeatureSet:
    """Feature candidates of the same labelled rows: candidates {name: X [N, D] float32}; y [N] (class ids or floats);
    ids: message ids (message level) or user ids (author level); user_ids: the author of each row; context: how the
    messages were read."""

    candidates: dict[str, np.ndarray]
    y: np.ndarray
    ids: list[str]
    user_ids: list[str]
    context: str

    def relabelled(self, corpus: Corpus) -> FeatureSet:
        """The same author features with the labels of another author task on the same authors."""
        return replace(self, y=author_labels(corpus, self.ids))


def author_labels(corpus: Corpus, users: Sequence[str]) -> np.ndarray:
    """The author-task label of each of `users` (class ids, or floats for a regression task)."""
    label = dict(zip(corpus.frame["user_id"], corpus.frame["label"]))
    return np.asarray([label[u] for u in users], dtype=np.float64 if corpus.regression else np.int64)


def _text_tokens(mask: torch.Tensor) -> torch.Tensor:
    """[K, T] attention mask of blocks (or [1, T] of a row) -> a bool [K, T]: the real tokens after each block's start
    token."""
    text = mask.bool().clone()
    text[:, 0] = False
    return text


@torch.inference_mode()
def message_features(model: torch.nn.Module, tokenizer: Any, corpus: Corpus, *, context: str = "auto",
                     layers: Sequence[int] | None = None, block_size: int = 256, max_blocks: int | None = None,
                     batch_size: int = 4, blocks_per_forward: int | None = 16, progress: bool = True) -> FeatureSet:
    """For every labelled message of a message-task corpus and every layer of `layers` (hidden-state indices,
    default `default_layers`): the hidden state at the message's last text token and the mean over its text tokens,
    the message read in `context` (see the module docstring).

    batch_size: authors (recurrent) or rows per forward; blocks_per_forward: recurrent blocks per forward, the
    state carried between chunks (None: all of an author's blocks at once)."""
    from tqdm.auto import tqdm

    if corpus.task != "message":
        raise ValueError(f"message features need a corpus loaded with task='message' (this one: {corpus.task!r})")
    parts = model_parts(model)
    variant = resolve_message_context(parts, context)
    layers = resolve_layers(parts, layers)
    data = build_blocks(corpus, tokenizer, variant=variant, task="message", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    separator = resolve_separator(tokenizer, None)
    rows = data.dataset.to_list()
    collate = data.collator()
    pooled: dict[str, list[torch.Tensor]] = {_candidate(l, p): [] for l in layers for p in POOLINGS}
    ys, ids, users = [], [], []

    def pool_piece(by_layer, block_ids, block_mask, block_labels, pooling) -> tuple[dict, torch.Tensor]:
        """The labelled positions of one piece (blocks [k, T] or a row [1, T]) pooled: ({candidate: [m, H]}, labels)."""
        text = _text_tokens(block_mask)
        flat_ids, flat_labels = block_ids[text], block_labels[text]
        where = (flat_labels != IGNORE_INDEX).nonzero().squeeze(-1)
        found = {}
        for layer in layers:
            hidden = by_layer[layer][text.to(by_layer[layer].device)].cpu()
            found[_candidate(layer, "last")], found[_candidate(layer, "mean")] = pooling[layer].pool(
                flat_ids, hidden, where)
        return found, flat_labels[where]

    def keep(found: dict) -> None:
        for name, values in found.items():
            pooled[name].append(values)

    for chunk in tqdm(list(_batches(rows, batch_size)), desc=f"message features ({variant})", disable=not progress):
        batch = collate(chunk)
        if variant == "recurrent":
            pooling = [{layer: MessagePooling(separator) for layer in layers} for _ in chunk]
            pieces: list[list[tuple[dict, torch.Tensor]]] = [[] for _ in chunk]
            for k0, by_layer, _ in recurrent_chunks(parts, batch, blocks_per_forward=blocks_per_forward, layers=layers):
                k = next(iter(by_layer.values())).shape[1]
                for a in range(len(chunk)):
                    pieces[a].append(pool_piece({l: h[a] for l, h in by_layer.items()},
                                                batch["input_ids"][a, k0 : k0 + k],
                                                batch["attention_mask"][a, k0 : k0 + k],
                                                batch["labels"][a, k0 : k0 + k], pooling[a]))
            for a, row in enumerate(chunk):  # each author's messages together, in stream order
                labels = torch.cat([labels for _, labels in pieces[a]])
                if len(labels) != len(row["message_ids"]):
                    raise RuntimeError(f"author {row['user_id']}: {len(labels)} labelled positions for "
                                       f"{len(row['message_ids'])} labelled messages")
                for found, _ in pieces[a]:
                    keep(found)
                ys.extend(labels.tolist())
                ids.extend(row["message_ids"])
                users.extend([row["user_id"]] * len(row["message_ids"]))
        else:
            by_layer, _ = run_backbone(parts, batch, layers=layers)
            for r in range(len(chunk)):
                end = torch.full_like(batch["input_ids"][r], IGNORE_INDEX)
                end[int(batch["attention_mask"][r].sum()) - 1] = 0  # a row ends at its labelled message's last token
                found, _ = pool_piece({l: h[r : r + 1] for l, h in by_layer.items()}, batch["input_ids"][r : r + 1],
                                      batch["attention_mask"][r : r + 1], end[None],
                                      {layer: MessagePooling(separator) for layer in layers})
                keep(found)
            ys.extend(batch["labels"].tolist())
            ids.extend(r["message_id"] for r in chunk)
            users.extend(r["user_id"] for r in chunk)
    candidates = {name: (torch.cat(x).numpy() if x else np.zeros((0, 0), np.float32)) for name, x in pooled.items()}
    y = np.asarray(ys, dtype=np.float64 if corpus.regression else np.int64)
    return FeatureSet(candidates, y, ids, users, variant)


STATE_CANDIDATES = ("state, final", "state, mean over blocks")


@torch.inference_mode()
def author_features(model: torch.nn.Module, tokenizer: Any, corpus: Corpus, *, layers: Sequence[int] | None = None,
                    block_size: int = 256, max_blocks: int | None = None, batch_size: int = 4,
                    blocks_per_forward: int | None = 16, progress: bool = True) -> FeatureSet:
    """Feature candidates of every author of an author-task corpus: the mean over the author's messages, each read
    alone, of each message's last-token (its separator) and mean-of-tokens features at every layer of `layers`; and for a HuLlama
    model also the author state after the last block ("state, final"), its mean over the real blocks, and that mean
    beside each message candidate ("state + ...")."""
    if corpus.task != "author":
        raise ValueError(f"author features need a corpus loaded with task='author' (this one: {corpus.task!r})")
    parts = model_parts(model)
    layers = resolve_layers(parts, layers)
    common = dict(block_size=block_size, max_blocks=max_blocks, batch_size=batch_size, progress=progress)
    messages = _pooled_message_features(parts, tokenizer, corpus, layers=layers, **common)
    states = _state_features(parts, tokenizer, corpus, blocks_per_forward=blocks_per_forward, **common) \
        if parts.hullama else {}
    users = [u for u in next(iter(messages.values())) if all(u in s for s in states.values())]
    message_candidates = {name: np.stack([per_user[u] for u in users]) for name, per_user in messages.items()}
    candidates = {name: np.stack([per_user[u] for u in users]) for name, per_user in states.items()}
    candidates.update(message_candidates)
    if states:
        mean_state = candidates[STATE_CANDIDATES[1]]
        candidates.update({f"state mean + messages' {name}": np.concatenate([mean_state, X], axis=1)
                           for name, X in message_candidates.items()})
    return FeatureSet(candidates, author_labels(corpus, users), users, users, "each message alone; states: recurrent")


def _state_features(parts, tokenizer, corpus, *, block_size, max_blocks, batch_size, blocks_per_forward, progress):
    """{"state, final": {user: vector}, "state, mean over blocks": {user: vector}}."""
    from tqdm.auto import tqdm

    data = build_blocks(corpus, tokenizer, variant="recurrent", task="author", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    rows = data.dataset.to_list()
    collate = data.collator()
    users, finals, means = [], [], []
    for chunk in tqdm(list(_batches(rows, batch_size)), desc="author states", disable=not progress):
        total, count, final = 0.0, 0.0, None
        for _, _, out in recurrent_chunks(parts, collate(chunk), blocks_per_forward=blocks_per_forward):
            real = out.block_mask.unsqueeze(-1).float()
            total, count = total + (out.author_states.float() * real).sum(1), count + real.sum(1)
            final = out.final_author_state.float()  # padding blocks keep the state: the state after the last real one
        means.append((total / count.clamp(min=1)).cpu())
        finals.append(final.cpu())
        users.extend(r["user_id"] for r in chunk)
    return {STATE_CANDIDATES[0]: dict(zip(users, torch.cat(finals).numpy())),
            STATE_CANDIDATES[1]: dict(zip(users, torch.cat(means).numpy()))}


def _pooled_message_features(parts, tokenizer, corpus, *, layers, block_size, max_blocks, batch_size, progress):
    """{candidate: {user: the mean over the author's messages (each read alone) of the message's feature}}."""
    from tqdm.auto import tqdm

    data = build_blocks(corpus, tokenizer, variant="none", task="author", block_size=block_size,
                        max_blocks=max_blocks, cache_dir=None)
    separator = resolve_separator(tokenizer, None)
    rows = data.dataset.to_list()
    collate = data.collator()
    order = list(dict.fromkeys(r["user_id"] for r in rows))
    index = {u: i for i, u in enumerate(order)}
    sums: dict[str, np.ndarray] = {}
    # a piece holding only its separator (a message cut exactly at a row's end) has a last token but no text to
    # average: it counts for the last-token candidates only
    counts = {pooling: np.zeros(len(order)) for pooling in POOLINGS}
    for chunk in tqdm(list(_batches(rows, batch_size)), desc="message features (pooled)", disable=not progress):
        batch = collate(chunk)
        by_layer, _ = run_backbone(parts, batch, layers=layers)
        rows_of = np.asarray([index[r["user_id"]] for r in chunk])
        text = _text_tokens(batch["attention_mask"])
        ids = [batch["input_ids"][r][text[r]] for r in range(len(chunk))]
        has_text = np.asarray([bool((i != separator).any()) for i in ids])
        for layer in layers:
            pooled = [MessagePooling(separator).pool(ids[r], by_layer[layer][r][text[r].to(by_layer[layer].device)],
                                                     [len(ids[r]) - 1]) for r in range(len(chunk))]
            for pooling, which, keep in (("last", 0, np.ones(len(chunk), bool)), ("mean", 1, has_text)):
                feats = torch.cat([p[which] for p in pooled]).cpu().numpy()
                name = _candidate(layer, pooling)
                if name not in sums:
                    sums[name] = np.zeros((len(order), feats.shape[1]))
                np.add.at(sums[name], rows_of[keep], feats[keep])
        np.add.at(counts["last"], rows_of, 1)
        np.add.at(counts["mean"], rows_of[has_text], 1)
    pooling_of = {_candidate(layer, p): p for layer in layers for p in POOLINGS}
    return {name: dict(zip(order, (total / np.maximum(counts[pooling_of[name]], 1)[:, None]).astype(np.float32)))
            for name, total in sums.items()}
