"""Author corpora to HuLM examples: token streams cut into blocks, in three author-context variants.

Stream. Each author's messages (in corpus order) are tokenized without special tokens; every message is followed
by the separator (a trained token: the tokenizer's eos unless configured) and the results are concatenated into
the author's token stream. A message that tokenizes to nothing is dropped and counted.

Start token. Every block and every row begins with a start token (the tokenizer's bos, else the separator).
It is never a prediction target, so every stream token, message tokens and separators alike, is predictable
in every variant.

Truncation (`max_blocks`): an author keeps a window of at most max_blocks * (block_size - 1) consecutive
stream tokens, the same window in every variant:
  "oldest" (default for lm and author tasks, as HaRT): the first tokens; the last kept message may be cut.
  "newest": the last tokens; the first kept message may be cut (its remaining tokens are still predicted).
  "labels" (default for message tasks): among the windows that end right after the separator of a labelled
    message, the one holding the most labelled messages (ties: the latest); then, if it starts at the stream's
    beginning, it is topped up with the following tokens. A label is kept when the last token of its message
    text is kept; the others are counted as truncated.

Variants (all predict the same (author, stream position, token) triples for lm; T = block_size,
C = T - 1 stream tokens a block, W = context_window >= T):
  recurrent  one example per author: K = ceil(window / C) blocks; block k = [start] + stream[k*C : (k+1)*C].
  in_context one row per recurrent block: [start] + up to W - 1 - len(block) earlier stream tokens (plain
             context, not predicted) + the block's tokens (predicted). With W = T, full blocks are exactly the
             recurrent blocks; an author's last, shorter block is topped up with earlier context.
  none       each message alone: [start] + its tokens (text and separator), all predicted. A message longer
             than W - 1 tokens is cut into consecutive pieces of W - 1 tokens, each a row [start] + piece, every
             token of every piece a target. Only the message's tokens inside the window are used.

Tasks:
  lm       labels = token ids at predicted positions, -100 elsewhere (start token, context, padding).
  message  recurrent: per-token labels, the class id (or float value) at the last token of each labelled
           message's text (not its separator), -100 elsewhere (regression too, as the model expects).
           none / in_context: one row per kept labelled message, ending at that token (none: the message alone,
           its tail if longer than W - 1; in_context: preceded by as much of the author's earlier window as fits
           in W), with a scalar label. Authors without a labelled message give no example (counted).
  author   the author's label as a scalar; recurrent: one example an author; none / in_context: the lm rows.

Columns: user_id; input_ids (recurrent: a list of K blocks; else one row); labels; length (real tokens, start
tokens included: the Trainer's group_by_length column); stream_start (stream position of input token 1; for
recurrent block k it is stream_start + k*C); recurrent: n_blocks; message tasks: message_ids (recurrent: the
labelled messages in stream order) or message_id (rows), to map predictions back to messages.

Caching: tokenization and layout are two `Dataset.map` calls with explicit fingerprints derived from the
corpus, the tokenizer and the configuration; with a cache folder a second build reads the cached Arrow files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from hullama.data import VARIANTS
from hullama.data.collator import IGNORE_INDEX, HuLMCollator
from hullama.data.corpus import Corpus, DataReport
from modeling_hullama import stream_blocks

TRUNCATIONS = ("oldest", "newest", "labels")
# Part of every cache key: bump it when the stream or the layout changes, so older cache files are not reused.
LAYOUT_VERSION = "1"


@dataclass(frozen=True)
class BlockConfig:
    """How an author's stream becomes model input. None means: the documented default."""

    block_size: int = 256
    variant: str = "recurrent"
    task: str | None = None  # None: the corpus's task ("lm" may be built from any corpus)
    context_window: int | None = None  # none / in_context window; None: block_size
    max_blocks: int | None = None  # None: keep every block
    truncation: str | None = None  # None: "labels" for message tasks, else "oldest"
    separator: int | str | None = None  # a token id or token string; None: tokenizer.eos_token_id

    def resolve(self, corpus: Corpus) -> BlockConfig:
        task = self.task or corpus.task
        if task not in ("lm", "message", "author"):
            raise ValueError(f"task must be lm, message or author, got {task!r}")
        if task != "lm" and task != corpus.task:
            raise ValueError(f"a {task} task needs a corpus loaded with task='{task}' (this one: '{corpus.task}')")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.block_size < 2:
            raise ValueError(f"block_size must be at least 2 (start token + one stream token), got {self.block_size}")
        window = self.context_window or self.block_size
        if window < self.block_size:
            raise ValueError(f"context_window ({window}) must be at least block_size ({self.block_size})")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError(f"max_blocks must be at least 1 or None, got {self.max_blocks}")
        truncation = self.truncation or ("labels" if task == "message" else "oldest")
        if truncation not in TRUNCATIONS or (truncation == "labels" and task != "message"):
            raise ValueError(f"truncation must be oldest or newest (or labels for message tasks), got {truncation!r}")
        return replace(self, task=task, context_window=window, truncation=truncation)


@dataclass(frozen=True)
class Plan:
    """The resolved, hashable settings the per-author layout reads."""

    variant: str
    task: str
    block_size: int
    window: int
    max_tokens: int | None
    truncation: str
    start_id: int
    regression: bool


@dataclass
class HuLMData:
    """A built dataset and what training needs beside it."""

    dataset: datasets.Dataset
    report: DataReport
    config: BlockConfig
    separator_id: int
    start_id: int
    pad_token_id: int
    id2label: dict[int, str] | None
    label2id: dict[str, int] | None
    regression: bool

    def collator(self, **kwargs: Any):
        """A HuLMCollator padding with this data's pad id (kwargs: pad_to_multiple_of, max_length)."""
        return HuLMCollator(self.pad_token_id, **kwargs)


# ------------------------------------------------------------------------------------------ per author


def _no_label(y: float | None) -> bool:
    return y is None or y != y  # NaN


def keep_window(n_tokens: int, label_positions: list[int], max_tokens: int | None, truncation: str) -> tuple[int, int]:
    """[start, end) of the stream tokens an author keeps (see the module docstring for the policies).

    label_positions: sorted stream positions of the last text token of each labelled message.
    """
    if max_tokens is None or n_tokens <= max_tokens:
        return 0, n_tokens
    if truncation == "newest":
        return n_tokens - max_tokens, n_tokens
    if truncation == "oldest" or not label_positions:
        return 0, max_tokens
    best_count, best_end, first_inside = -1, 0, 0
    for j, q in enumerate(label_positions):
        end = q + min(2, max_tokens)  # just after the separator that follows the labelled message, if it fits
        while label_positions[first_inside] < end - max_tokens:
            first_inside += 1
        if j - first_inside + 1 >= best_count:  # >=: ties go to the later window
            best_count, best_end = j - first_inside + 1, end
    start = max(0, best_end - max_tokens)
    return start, min(n_tokens, start + max_tokens)


def layout_author(stream: list[int], sep_pos: list[int], labels: list[float], message_ids: list[str | None],
                  plan: Plan) -> list[dict[str, Any]]:
    """The examples (recurrent: one) or rows (none, in_context) of one author; see the module docstring."""
    labelled = [i for i, y in enumerate(labels) if not _no_label(y)] if plan.task == "message" else []
    if plan.task == "message" and not labelled:
        return []
    ws, we = keep_window(len(stream), [sep_pos[i] - 1 for i in labelled], plan.max_tokens, plan.truncation)
    value = float if plan.regression else int
    C, W, start = plan.block_size - 1, plan.window, plan.start_id

    if plan.variant == "recurrent":
        blocks = stream_blocks(stream[ws:we], plan.block_size, start)
        row: dict[str, Any] = {"input_ids": blocks, "length": sum(map(len, blocks)), "n_blocks": len(blocks),
                               "stream_start": ws}
        if plan.task == "lm":
            row["labels"] = [[IGNORE_INDEX] + b[1:] for b in blocks]
        elif plan.task == "author":
            row["labels"] = value(labels[0])
        else:
            fill = float(IGNORE_INDEX) if plan.regression else IGNORE_INDEX
            per_token, ids = [[fill] * len(b) for b in blocks], []
            for i in labelled:
                q = sep_pos[i] - 1
                if ws <= q < we:
                    k, p = divmod(q - ws, C)
                    per_token[k][p + 1] = value(labels[i])
                    ids.append(message_ids[i])
            row["labels"], row["message_ids"] = per_token, ids
        return [row]

    def make_row(lo: int, first_target: int, hi: int) -> dict[str, Any]:
        """Row [start] + stream[lo:hi]; stream[first_target:hi] are the lm targets."""
        ids = [start] + stream[lo:hi]
        row = {"input_ids": ids, "length": len(ids), "stream_start": lo}
        if plan.task == "lm":
            row["labels"] = [IGNORE_INDEX] * (1 + first_target - lo) + stream[first_target:hi]
        elif plan.task == "author":
            row["labels"] = value(labels[0])
        return row

    rows = []
    if plan.task == "message":
        for i in labelled:
            q = sep_pos[i] - 1
            if not ws <= q < we:
                continue
            message_start = sep_pos[i - 1] + 1 if i else 0
            lo = max(ws, q + 1 - (W - 1), message_start if plan.variant == "none" else ws)
            row = make_row(lo, q + 1, q + 1)
            row["labels"], row["message_id"] = value(labels[i]), message_ids[i]
            rows.append(row)
    elif plan.variant == "in_context":
        for s in range(ws, we, C):
            e = min(s + C, we)
            rows.append(make_row(max(ws, e - (W - 1)), s, e))
    else:  # none
        for i, sep in enumerate(sep_pos):
            a, b = max(sep_pos[i - 1] + 1 if i else 0, ws), min(sep + 1, we)
            rows.extend(make_row(p, p, min(p + W - 1, b)) for p in range(a, b, W - 1))
    return rows


# ------------------------------------------------------------------------------------- dataset stages

_AUTHOR_FEATURES = datasets.Features({
    "user_id": datasets.Value("string"),
    "messages": datasets.List(datasets.Value("string")),
    "message_ids": datasets.List(datasets.Value("string")),
    "labels": datasets.List(datasets.Value("float64")),
})
_TOKEN_FEATURES = datasets.Features({
    "user_id": datasets.Value("string"),
    "stream": datasets.List(datasets.Value("int32")),
    "sep_pos": datasets.List(datasets.Value("int32")),
    "message_ids": datasets.List(datasets.Value("string")),
    "labels": datasets.List(datasets.Value("float64")),
    "n_untokenized": datasets.Value("int32"),
    "n_untokenized_labels": datasets.Value("int32"),
})


def _row_features(plan: Plan) -> datasets.Features:
    int_list = datasets.List(datasets.Value("int32"))
    scalar = datasets.Value("float32" if plan.regression else "int64")
    f: dict[str, Any] = {"user_id": datasets.Value("string"), "length": datasets.Value("int64"),
                         "stream_start": datasets.Value("int64")}
    if plan.variant == "recurrent":
        f["input_ids"], f["n_blocks"] = datasets.List(int_list), datasets.Value("int32")
        if plan.task == "message":
            per_token = datasets.List(datasets.Value("float32")) if plan.regression else int_list
            f["labels"] = datasets.List(per_token)
            f["message_ids"] = datasets.List(datasets.Value("string"))
        else:
            f["labels"] = datasets.List(int_list) if plan.task == "lm" else scalar
    else:
        f["input_ids"] = int_list
        f["labels"] = int_list if plan.task == "lm" else scalar
        if plan.task == "message":
            f["message_id"] = datasets.Value("string")
    return datasets.Features(f)


def _tokenize_batch(batch: dict[str, list], tokenizer: Any, separator_id: int) -> dict[str, list]:
    """Author texts to streams: message tokens + separator, concatenated; empty tokenizations dropped."""
    flat = [m for messages in batch["messages"] for m in messages]
    # verbose=False: a message longer than the tokenizer's model_max_length is cut into blocks later, so
    # transformers' "indexing errors" warning about it would be wrong here
    encoded = tokenizer(flat, add_special_tokens=False, return_attention_mask=False,
                        verbose=False)["input_ids"] if flat else []
    out: dict[str, list] = {k: [] for k in _TOKEN_FEATURES if k != "user_id"}
    k = 0
    for ids, labels in zip(batch["message_ids"], batch["labels"]):
        stream, seps, kept_ids, kept_labels, empty, empty_labels = [], [], [], [], 0, 0
        for mid, label in zip(ids, labels):
            tokens, k = encoded[k], k + 1
            if not tokens:
                empty, empty_labels = empty + 1, empty_labels + (not _no_label(label))
                continue
            stream.extend(tokens)
            stream.append(separator_id)
            seps.append(len(stream) - 1)
            kept_ids.append(mid)
            kept_labels.append(label)
        for key, v in zip(out, (stream, seps, kept_ids, kept_labels, empty, empty_labels)):
            out[key].append(v)
    return {"user_id": batch["user_id"], **out}


def _layout_batch(batch: dict[str, list], plan: Plan) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in _row_features(plan)}
    for j, user in enumerate(batch["user_id"]):
        if not batch["stream"][j]:
            continue  # every message tokenized to nothing (counted in the report)
        rows = layout_author(batch["stream"][j], batch["sep_pos"][j], batch["labels"][j], batch["message_ids"][j], plan)
        for row in rows:
            row["user_id"] = user
            for key in out:
                out[key].append(row[key])
    return out


def _author_dataset(corpus: Corpus) -> datasets.Dataset:
    """One row per author: its messages, ids and labels in order (the corpus frame is grouped by author)."""
    frame = corpus.frame
    users = frame["user_id"].to_numpy(dtype=object)
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(frame)]
    messages = frame["message"].tolist()
    ids = [None if isinstance(x, float) else x for x in frame["message_id"].to_numpy(dtype=object)]  # NaN: no id
    labels = frame["label"].tolist()
    data = {
        "user_id": [users[s] for s in starts],
        "messages": [messages[s:e] for s, e in zip(starts, ends)],
        "message_ids": [ids[s:e] for s, e in zip(starts, ends)],
        "labels": [labels[s:e] for s, e in zip(starts, ends)],
    }
    return datasets.Dataset.from_dict(data, features=_AUTHOR_FEATURES)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's full definition (vocabulary, merges, normalizers, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else datasets.fingerprint.Hasher.hash(tokenizer)
    meta = json.dumps([type(tokenizer).__name__, tokenizer.bos_token_id, tokenizer.eos_token_id])
    return hashlib.sha256((body + meta).encode()).hexdigest()


def resolve_separator(tokenizer: Any, separator: int | str | None) -> int:
    """The separator's id: an existing token of the vocabulary (a new one would need training)."""
    if separator is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token: pass separator=<a token or id of its vocabulary>")
        return int(tokenizer.eos_token_id)
    if isinstance(separator, str):
        vocab = tokenizer.get_vocab()
        if separator not in vocab:
            raise ValueError(f"separator {separator!r} is not a token of the tokenizer's vocabulary")
        return int(vocab[separator])
    if not 0 <= int(separator) < len(tokenizer):
        raise ValueError(f"separator id {separator} is outside the vocabulary (size {len(tokenizer)})")
    return int(separator)


def _cache_folder(cache_dir: str | Path | bool | None) -> Path | None:
    if cache_dir is None or cache_dir is False:
        return None
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "hullama" if cache_dir is True else Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def build_blocks(
    corpus: Corpus,
    tokenizer: Any,
    config: BlockConfig | None = None,
    *,
    cache_dir: str | Path | bool | None = True,
    num_proc: int | None = None,
    batch_size: int = 64,
    **overrides: Any,
) -> HuLMData:
    """Tokenize a corpus and lay it out as `config.variant` examples for `config.task`.

    cache_dir: True = datasets' cache folder / "hullama"; a path; None or False = in memory, no cache files.
    num_proc: worker processes for both map stages. batch_size: authors per map batch.
    overrides: BlockConfig fields, e.g. build_blocks(corpus, tok, variant="none", block_size=128).
    """
    config = replace(config or BlockConfig(), **overrides).resolve(corpus)
    separator_id = resolve_separator(tokenizer, config.separator)
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else separator_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else separator_id
    folder = _cache_folder(cache_dir)
    plan = Plan(config.variant, config.task, config.block_size, config.context_window,
                None if config.max_blocks is None else config.max_blocks * (config.block_size - 1),
                config.truncation, int(start_id), corpus.regression)

    def cached(stage: str, key: str) -> dict[str, Any]:
        return {"new_fingerprint": key, "num_proc": num_proc,
                "cache_file_name": str(folder / f"hulm-{stage}-{key}.arrow") if folder else None}

    authors = _author_dataset(corpus)
    token_key = _key(LAYOUT_VERSION, corpus.fingerprint(), tokenizer_fingerprint(tokenizer), separator_id)
    tokens = authors.map(_tokenize_batch, batched=True, batch_size=batch_size, remove_columns=["messages"],
                         fn_kwargs={"tokenizer": tokenizer, "separator_id": separator_id}, features=_TOKEN_FEATURES,
                         desc="Tokenizing authors", **cached("tokens", token_key))
    rows = tokens.map(_layout_batch, batched=True, batch_size=batch_size, remove_columns=tokens.column_names,
                      fn_kwargs={"plan": plan}, features=_row_features(plan),
                      desc=f"Laying out {plan.variant} {plan.task} examples",
                      **cached(f"{plan.variant}-{plan.task}", _key(token_key, asdict(plan))))
    report = _report(corpus, tokens, plan, len(rows))
    return HuLMData(rows, report, config, separator_id, int(start_id), int(pad_id), corpus.id2label,
                    corpus.label2id, corpus.regression)


def _report(corpus: Corpus, tokens: datasets.Dataset, plan: Plan, n_rows: int) -> DataReport:
    """The corpus report carried through tokenization and truncation (recomputed from the cached columns)."""
    base = corpus.report
    r = replace(base, messages_dropped=dict(base.messages_dropped), authors_dropped=dict(base.authors_dropped),
                labels_dropped=dict(base.labels_dropped), notes=list(base.notes))
    r.source = f"{base.source} -> {plan.variant} {plan.task}, block {plan.block_size}" + (
        f", window {plan.window}" if plan.variant != "recurrent" and plan.window != plan.block_size else "")

    def add(d: dict[str, int], why: str, n: int) -> None:
        if n:
            d[why] = d.get(why, 0) + n

    table = tokens.data
    untokenized = sum(table.column("n_untokenized").to_pylist())
    add(r.messages_dropped, "no tokens after tokenization", untokenized)
    if plan.task == "message":
        add(r.labels_dropped, "on messages with no tokens", sum(table.column("n_untokenized_labels").to_pylist()))
    n_tokens = pc.list_value_length(table.column("stream")).to_pylist()
    seps, labels = table.column("sep_pos").to_pylist(), table.column("labels").to_pylist()
    r.messages_kept = r.messages_truncated = r.messages_cut = r.tokens_kept = r.tokens_truncated = r.blocks = 0
    r.labels_kept = r.labels_truncated = 0
    authors_kept = 0
    for n, sep, ys in zip(n_tokens, seps, labels):
        labelled = [i for i, y in enumerate(ys) if not _no_label(y)] if plan.task == "message" else []
        if n == 0 or (plan.task == "message" and not labelled):
            why = "no tokens after tokenization" if n == 0 else "no labelled message (message task)"
            add(r.authors_dropped, why, 1)
            add(r.messages_dropped, "author has no labelled message (message task)", len(sep) if n else 0)
            continue
        authors_kept += 1
        ws, we = keep_window(n, [sep[i] - 1 for i in labelled], plan.max_tokens, plan.truncation)
        r.tokens_kept += we - ws
        r.tokens_truncated += n - (we - ws)
        r.blocks += -(-(we - ws) // (plan.block_size - 1)) if plan.variant == "recurrent" else 0
        for i, end in enumerate(sep):
            begin = sep[i - 1] + 1 if i else 0
            if end < ws or begin >= we:
                r.messages_truncated += 1
            else:
                r.messages_kept += 1
                r.messages_cut += begin < ws or end >= we
        kept_labels = sum(ws <= sep[i] - 1 < we for i in labelled)
        r.labels_kept += kept_labels
        r.labels_truncated += len(labelled) - kept_labels
    r.authors_kept = authors_kept
    if plan.task == "author":
        r.labels_kept = authors_kept
    elif plan.task == "lm":
        if corpus.task != "lm":
            r.notes.append(f"the corpus's {corpus.task} labels are not used by an lm task")
        r.labels_read = r.labels_kept = 0
        r.labels_dropped = {}
    r.examples = n_rows
    return r
