"""Batches of HuLM examples as padded tensors, and the padding a batch size costs.

recurrent examples (input_ids = a list of blocks) become
    input_ids      long  [authors, K, T]  pad_token_id on padding
    attention_mask long  [authors, K, T]  1 on real tokens (start token included), 0 on padding
    labels         lm / message: [authors, K, T], long with -100 on padding and non-targets
                   (message regression: float32, also -100 there); author: [authors] (long class id or float32)
  K = the most blocks of any author in the batch: shorter authors get all-padding blocks appended (attention_mask
  all 0: the model must carry its state through them unchanged).
none / in_context rows (input_ids = a list of ids) become
    input_ids, attention_mask  [rows, T];  labels: lm [rows, T]; message / author [rows]
Padding is on the right. T = the longest block / row in the batch rounded up to `pad_to_multiple_of` (default 8,
tensor-core friendly), never beyond `max_length` when that is set (e.g. block_size). Other columns are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # labels of tokens that are never predicted (transformers' convention)


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


def _is_float(value: Any) -> bool:
    return isinstance(value, (float, np.floating))


@dataclass
class HuLMCollator:
    """Pads HuLM examples into tensors (layout in the module docstring)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = 8
    max_length: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> HuLMCollator:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(pad_token_id=pad, **kwargs)

    def _width(self, longest: int) -> int:
        width = _round_up(longest, self.pad_to_multiple_of)
        return max(longest, min(width, self.max_length)) if self.max_length else width

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        first = features[0]["input_ids"]
        if len(first) and isinstance(first[0], (list, tuple, np.ndarray)):
            return self._recurrent(features)
        return self._rows(features)

    def _scalar_labels(self, features: list[dict[str, Any]]) -> torch.Tensor:
        values = [f["labels"] for f in features]
        dtype = torch.float32 if any(_is_float(v) for v in values) else torch.long
        return torch.tensor(values, dtype=dtype)

    def _recurrent(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_blocks = max(len(f["input_ids"]) for f in features)
        width = self._width(max(len(block) for f in features for block in f["input_ids"]))
        shape = (len(features), n_blocks, width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        for a, f in enumerate(features):
            for k, block in enumerate(f["input_ids"]):
                input_ids[a, k, : len(block)] = torch.as_tensor(block, dtype=torch.long)
                attention_mask[a, k, : len(block)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "labels" not in features[0]:
            return batch
        per_token = isinstance(features[0]["labels"], (list, tuple))
        if not per_token:
            batch["labels"] = self._scalar_labels(features)
            return batch
        regression = any(_is_float(x) for f in features for block in f["labels"] for x in block[:1] + block[-1:])
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.float32 if regression else torch.long)
        for a, f in enumerate(features):
            for k, block in enumerate(f["labels"]):
                labels[a, k, : len(block)] = torch.as_tensor(block, dtype=labels.dtype)
        batch["labels"] = labels
        return batch

    def _rows(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = self._width(max(len(f["input_ids"]) for f in features))
        shape = (len(features), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        for r, f in enumerate(features):
            input_ids[r, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            attention_mask[r, : len(f["input_ids"])] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "labels" not in features[0]:
            return batch
        if not isinstance(features[0]["labels"], (list, tuple)):
            batch["labels"] = self._scalar_labels(features)
            return batch
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        for r, f in enumerate(features):
            labels[r, : len(f["labels"])] = torch.as_tensor(f["labels"], dtype=torch.long)
        batch["labels"] = labels
        return batch


def padding_fraction(dataset: Any, batch_size: int, *, group_by_length: bool = False,
                     pad_to_multiple_of: int | None = 8, max_length: int | None = None, seed: int = 0) -> float:
    """The share of padded cells in the batches `HuLMCollator` would make from `dataset`.

    Batches are consecutive examples in dataset order, or, with group_by_length, in the order of transformers'
    LengthGroupedSampler over the `length` column (what the Trainer does with
    train_sampling_strategy="group_by_length"), seeded by `seed`.
    """
    table = dataset.data
    lengths = np.asarray(table.column("length").to_pylist())
    if "n_blocks" in dataset.column_names:  # recurrent: cells = authors x K x T
        blocks = table.column("input_ids").combine_chunks()
        block_lens = np.asarray(blocks.flatten().value_lengths())
        offsets = np.asarray(blocks.offsets)
        longest = np.maximum.reduceat(block_lens, offsets[:-1]) if len(block_lens) else np.zeros(0, int)
        n_blocks = np.diff(offsets)
    else:
        longest, n_blocks = lengths, np.ones(len(lengths), dtype=int)
    if group_by_length:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        generator = torch.Generator().manual_seed(seed)
        order = np.asarray(list(LengthGroupedSampler(batch_size, lengths=lengths.tolist(), generator=generator)))
    else:
        order = np.arange(len(lengths))
    collator = HuLMCollator(0, pad_to_multiple_of, max_length)
    cells = real = 0
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        cells += len(idx) * int(n_blocks[idx].max()) * collator._width(int(longest[idx].max()))
        real += int(lengths[idx].sum())
    return 1 - real / cells if cells else 0.0
