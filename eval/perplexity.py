"""Held-out perplexity over an author corpus, for the three author-context variants on exactly the same tokens.

Variants (data/blocks.py builds each from the same stream window of every author):
  recurrent               HuLlama blocks in time order, the author state carried from block to block
  in_context              the author's earlier messages as plain text in the same context window (no state)
  none                    each message alone (the ecological-fallacy baseline)
  recurrent_zeroed_state  the ablation: recurrent blocks with the state reset before every block (each block
                          run alone from the learned initial state U0; or the model's own `ablate_state=True`
                          forward switch, when its forward has one). Added whenever recurrent runs.
A HuLlama model runs all of them (a 2-D input is one block from U0); a plain Llama runs in_context and none
(recurrent is skipped with a note). Per-token negative log-likelihoods are computed for every variant, and the
multiset of predicted (author, stream position, token) triples is checked to be identical across variants
before anything is compared; a mismatch raises `TokenMismatchError`.

Reported per variant: perplexity, and its breakdown by how much of the author's (kept) history precedes a token
(`history_buckets` of preceding stream tokens, default 0-255 / 256-1023 / 1024+) and by block index (block 1,
blocks 2+, and every block k). Comparisons between variants are paired bootstraps over authors (resampling
authors with replacement; perplexity = exp(summed NLL / tokens) of the resample): the difference in perplexity
(a - b, negative = a better), the ratio a / b, each with a 95 % percentile interval, on all tokens and on
blocks 2+ (where the state can matter).

Python:
    from hullama.eval.perplexity import evaluate_perplexity, format_results
    results = evaluate_perplexity(model, tokenizer, corpus, block_size=256, max_blocks=8, batch_size=4)
    print(format_results(results))

Command line (from the repository root; writes perplexity.json and perplexity.png to --output_dir):
    python eval/perplexity.py --model runs/hullama-smollm2 --data ../shared/data/commits/numpy_test.jsonl \\
        --block_size 256 --max_blocks 8 --output_dir outputs/ppl-numpy-test
    python eval/perplexity.py --model ~/.cache/hullama/smollm2-135m --as_hullama --adapter runs/lora \\
        --data ../shared/data/commits/numpy_dev.jsonl --variants recurrent in_context --output_dir outputs/ppl-dev
    python eval/perplexity.py --model ~/.cache/hullama/smollm2-135m --data synthetic --output_dir outputs/ppl-syn
    python eval/perplexity.py --model outputs/hulm/recurrent --dataset_name my_dataset_folder --split test
`--data synthetic` is the embedded synthetic corpus's held-out split: hullama.data.synthetic.synthetic_corpus(seed=0)
(200 authors), split by author with hullama.data.corpus.split_by_author(seed=0) (80/10/10), split "test".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from hullama.command_line import check_common_args
from hullama.data.blocks import IGNORE_INDEX, VARIANTS, build_blocks
from hullama.data.corpus import Corpus
from hullama.eval.commands import ALL_VARIANTS, ZEROED, perplexity_parser
from hullama.eval.features import ModelParts, model_parts, recurrent_chunks
from hullama.eval.protocol import author_resamples

DEFAULT_HISTORY_BUCKETS = (0, 256, 1024)
# (a, b) pairs compared by the bootstrap, when both were computed.
COMPARISONS = (("recurrent", "in_context"), ("recurrent", ZEROED), ("recurrent", "none"), ("in_context", "none"))


HELD_OUT_SCORES = "held_out_scores.npz"  # what train/hulm.py keeps of its held-out scoring (TokenScores.save)
# The state study's criterion: recurrent below in_context on blocks 2+ (interval below zero), and zeroing the state
# costing at least this much (benchmarks/study_report.py, study_seeds.py).
ABLATION_COST_PERCENT = 3.0


class TokenMismatchError(AssertionError):
    """The variants did not predict the same (author, stream position, token) multiset."""


@dataclass
class TokenScores:
    """Per-token results aligned across variants, sorted by (author, stream position).

    author: index into `authors`; position: stream position; history: kept stream tokens before the token;
    block: 0-based recurrent block index (history // (block_size - 1)); nll: {variant: [N] float64 nats};
    seconds: {variant: wall time}; skipped: {variant: why}.
    """

    authors: list[str]
    author: np.ndarray
    position: np.ndarray
    token: np.ndarray
    history: np.ndarray
    block: np.ndarray
    nll: dict[str, np.ndarray]
    seconds: dict[str, float]
    skipped: dict[str, str]

    def save(self, path: str | Path) -> Path:
        """Write to `path` (.npz: the arrays; a .json beside it: the names), so that runs scored apart can be
        compared token by token later (benchmarks/study_report.py)."""
        path = Path(path).with_suffix(".npz")
        np.savez(path, author=self.author, position=self.position, token=self.token, history=self.history,
                 block=self.block, **{f"nll/{v}": x for v, x in self.nll.items()})
        path.with_suffix(".json").write_text(json.dumps({"authors": self.authors, "variants": list(self.nll),
                                                         "seconds": self.seconds, "skipped": self.skipped}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TokenScores":
        path = Path(path).with_suffix(".npz")
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path) as arrays:
            return cls(meta["authors"], arrays["author"], arrays["position"], arrays["token"], arrays["history"],
                       arrays["block"], {v: arrays[f"nll/{v}"] for v in meta["variants"]}, meta["seconds"],
                       meta["skipped"])

    def renamed(self, names: dict[str, str]) -> "TokenScores":
        """The same scores with variants renamed (`names`: old -> new; others keep their name)."""
        rename = lambda table: {names.get(k, k): v for k, v in table.items()}  # noqa: E731
        return replace(self, nll=rename(self.nll), seconds=rename(self.seconds), skipped=rename(self.skipped))


def merge_token_scores(scores: list[TokenScores]) -> TokenScores:
    """One TokenScores over every variant of several, after checking that they all predicted the same tokens of the
    same authors and that no variant name repeats."""
    names = [name for s in scores for name in s.nll]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variants {repeated} come from more than one of the scores merged")
    if any(s.authors != scores[0].authors for s in scores):
        raise ValueError("the scores merged are of different held-out authors")
    check_same_tokens({name: (s.author, s.position, s.token) for s in scores for name in s.nll})
    if any(not np.array_equal(s.block, scores[0].block) for s in scores):
        raise ValueError("the scores merged cut the authors' streams into different blocks (another block_size?): "
                         "their block-by-block breakdowns cannot be compared")
    return replace(scores[0], nll={k: v for s in scores for k, v in s.nll.items()},
                   seconds={k: v for s in scores for k, v in s.seconds.items()},
                   skipped={k: v for s in scores for k, v in s.skipped.items()})


def load_run_scores(folders: list[Path]) -> TokenScores:
    """The held-out scores of several train/hulm.py runs (each folder's held_out_scores.npz) as one TokenScores, a
    run's recurrent variants named after its folder (`recurrent[<folder>]`, `recurrent[<folder>]_zeroed_state`);
    the runs must have scored the same tokens, cut into the same blocks."""
    scores = []
    for folder in map(Path, folders):
        if not (folder / HELD_OUT_SCORES).is_file():
            raise ValueError(f"{folder} has no {HELD_OUT_SCORES}: train it with train/hulm.py first")
        label = f"recurrent[{folder.name}]"
        scores.append(TokenScores.load(folder / HELD_OUT_SCORES).renamed(
            {"recurrent": label, ZEROED: f"{label}_zeroed_state"}))
    return merge_token_scores(scores)


# ------------------------------------------------------------------------------------------------ scoring


def _token_nll(parts: ModelParts, hidden: torch.Tensor, labels: torch.Tensor, base: torch.Tensor,
               author: torch.Tensor, chunk: int = 4096) -> tuple[np.ndarray, ...]:
    """hidden [R, T, H], labels [R, T] (-100 = no target), base [R] (stream position of input token 1),
    author [R] -> (author, position, token, nll) of every target; the head runs only on predicting positions."""
    labels = labels.to(hidden.device)
    targets = labels[:, 1:] != IGNORE_INDEX  # input token j+1 is predicted from hidden j
    steps = torch.arange(labels.shape[1] - 1, device=hidden.device)
    h = hidden[:, :-1][targets]
    y = labels[:, 1:][targets]
    pos = (base.to(hidden.device)[:, None] + steps[None])[targets]
    who = author.to(hidden.device)[:, None].expand_as(targets)[targets]
    nll = [torch.nn.functional.cross_entropy(parts.head(h[i : i + chunk]).float(), y[i : i + chunk],
                                             reduction="none") for i in range(0, len(y), chunk)]
    nll = torch.cat(nll) if nll else torch.zeros(0)
    return tuple(t.cpu().numpy() for t in (who, pos, y, nll.double()))


def _score_variant(parts: ModelParts, tokenizer: Any, corpus: Corpus, variant: str, *, block_size: int,
                   context_window: int | None, max_blocks: int | None, batch_size: int, author_index: dict[str, int],
                   blocks_per_forward: int | None, progress: bool) -> tuple[np.ndarray, ...]:
    from tqdm.auto import tqdm

    build_as = "recurrent" if variant == ZEROED else variant
    data = build_blocks(corpus, tokenizer, variant=build_as, task="lm", block_size=block_size,
                        context_window=context_window, max_blocks=max_blocks, cache_dir=None)
    rows = data.dataset.to_list()
    recurrent = build_as == "recurrent"
    rows.sort(key=(lambda r: -r["n_blocks"]) if recurrent else (lambda r: -r["length"]))  # less padding
    collate = data.collator()
    C = block_size - 1
    pieces = []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"perplexity: {variant}", disable=not progress):
        chunk = rows[start : start + batch_size]
        batch = collate(chunk)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        first = torch.tensor([r["stream_start"] for r in chunk])
        who = torch.tensor([author_index[r["user_id"]] for r in chunk])
        device = parts.device
        if not recurrent:
            out = parts.backbone(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            pieces.append(_token_nll(parts, out.last_hidden_state, labels, first, who))
            continue
        B, K, T = ids.shape
        step = blocks_per_forward or K
        if variant == ZEROED and parts.ablate_kwarg is None:  # every block alone, from the initial state
            for k0 in range(0, K, step):
                k = min(step, K - k0)
                flat_mask = mask[:, k0 : k0 + k].reshape(B * k, T)
                real = flat_mask.any(-1).nonzero().squeeze(-1)
                out = parts.backbone(input_ids=ids[:, k0 : k0 + k].reshape(B * k, T)[real].to(device),
                                     attention_mask=flat_mask[real].to(device), use_cache=False)
                base = (first[:, None] + C * (k0 + torch.arange(k))[None]).reshape(-1)[real]
                pieces.append(_token_nll(parts, out.last_hidden_state, labels[:, k0 : k0 + k].reshape(B * k, T)[real],
                                         base, who[:, None].expand(B, k).reshape(-1)[real]))
            continue
        extra = {parts.ablate_kwarg: True} if variant == ZEROED else {}
        for k0, by_layer, _ in recurrent_chunks(parts, batch, blocks_per_forward=blocks_per_forward, **extra):
            hidden = by_layer[-1]
            k = hidden.shape[1]
            base = (first[:, None] + C * (k0 + torch.arange(k))[None]).reshape(-1)
            pieces.append(_token_nll(parts, hidden.reshape(B * k, T, -1), labels[:, k0 : k0 + k].reshape(B * k, T),
                                     base, who[:, None].expand(B, k).reshape(-1)))
    if not pieces:
        return tuple(np.zeros(0, dtype=d) for d in (np.int64, np.int64, np.int64, np.float64))
    return tuple(np.concatenate(p) for p in zip(*pieces))


def check_same_tokens(keys: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """keys: {variant: (author, position, token)} sorted by (author, position). Raises TokenMismatchError unless
    every variant predicts every (author, position) exactly once and the same token there."""
    reference_name, reference = None, None
    for name, (author, position, token) in keys.items():
        repeated = (author[1:] == author[:-1]) & (position[1:] == position[:-1])
        if repeated.any():
            i = int(np.flatnonzero(repeated)[0])
            raise TokenMismatchError(f"{name}: stream position {position[i]} of author #{author[i]} is predicted "
                                     f"{int(repeated.sum()) + 1}+ times")
        if reference is None:
            reference_name, reference = name, (author, position, token)
            continue
        if len(author) != len(reference[0]):
            raise TokenMismatchError(f"{name} predicts {len(author):,} tokens, {reference_name} {len(reference[0]):,}")
        for what, mine, theirs in zip(("author", "position", "token"), (author, position, token), reference):
            if not np.array_equal(mine, theirs):
                i = int(np.flatnonzero(mine != theirs)[0])
                raise TokenMismatchError(f"{name} and {reference_name} differ at predicted token #{i}: {what} "
                                         f"{mine[i]} vs {theirs[i]}")


def score_variants(model: torch.nn.Module, tokenizer: Any, corpus: Corpus, *, block_size: int = 256,
                   max_blocks: int | None = None, context_window: int | None = None,
                   variants: Sequence[str] = VARIANTS, zeroed_state: bool = True, batch_size: int = 4,
                   blocks_per_forward: int | None = 16, device: str | torch.device | None = None,
                   progress: bool = True) -> TokenScores:
    """Per-token NLL of every requested variant (plus the zeroed-state ablation), aligned and checked.

    batch_size: sequences per forward (recurrent: authors, each with its blocks; else rows). blocks_per_forward:
    recurrent blocks per forward, the state carried from chunk to chunk (bounds memory; None: all at once).
    The model is put in eval mode for the call and back in its previous mode after; `device` moves it first
    (when it is not there already).
    """
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of {ALL_VARIANTS}; got {list(variants)}")
    parts = model_parts(model)
    if parts.head is None:
        raise ValueError("perplexity needs a causal LM with an output head (e.g. HuLlamaForCausalLM, LlamaForCausalLM)")
    if device is not None:
        wanted, current = torch.device(device), parts.device
        if wanted.type != current.type or (wanted.index is not None and wanted.index != current.index):
            model.to(wanted)
    todo, skipped = list(dict.fromkeys(variants)), {}
    if "recurrent" in todo and zeroed_state and ZEROED not in todo:
        todo.append(ZEROED)
    if not parts.hullama:
        for v in ("recurrent", ZEROED):
            if v in todo:
                todo.remove(v)
                skipped[v] = "the model is not HuLlama: it has no author state"
    if not todo:
        raise ValueError(f"nothing to evaluate: {skipped}")
    authors = corpus.authors
    author_index = {u: i for i, u in enumerate(authors)}
    raw, seconds = {}, {}
    was_training = model.training
    model.eval()
    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        with torch.inference_mode():
            for v in todo:
                t0 = time.perf_counter()
                raw[v] = _score_variant(parts, tokenizer, corpus, v, block_size=block_size,
                                        context_window=context_window, max_blocks=max_blocks, batch_size=batch_size,
                                        author_index=author_index, blocks_per_forward=blocks_per_forward,
                                        progress=progress)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                seconds[v] = time.perf_counter() - t0
    finally:
        model.train(was_training)
        if bars_were_on:
            datasets.enable_progress_bars()
    ordered = {}
    for v, (who, pos, tok, nll) in raw.items():
        order = np.lexsort((pos, who))
        ordered[v] = (who[order], pos[order], tok[order], nll[order])
    check_same_tokens({v: o[:3] for v, o in ordered.items()})
    who, pos, tok, _ = ordered[todo[0]]
    if len(who) == 0:
        raise ValueError(f"{corpus.source}: no token to predict (is the corpus empty?)")
    window_start = np.full(len(authors), np.iinfo(np.int64).max)
    np.minimum.at(window_start, who, pos)  # the first kept stream token is a target in every variant
    history = pos - window_start[who]
    return TokenScores(authors, who, pos, tok, history, history // (block_size - 1),
                       {v: o[3] for v, o in ordered.items()}, seconds, skipped)


# ---------------------------------------------------------------------------------------------- summaries


def _bucket_names(edges: Sequence[int]) -> list[str]:
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def _perplexity(nll: np.ndarray, author: np.ndarray, n_authors: int, mask: np.ndarray,
                metric: Any = None, bootstrap: tuple[int, int] | None = None) -> dict[str, Any]:
    """Pooled perplexity of the masked tokens: through the repository's perplexity_from_loss metric when given,
    else the same formula, exp(sum NLL / tokens), in numpy (the breakdowns: dozens of subsets). With
    `bootstrap=(samples, seed)` also `ci95`, its 95 % percentile interval resampling the subset's authors."""
    count = np.bincount(author[mask], minlength=n_authors)
    if count.sum() == 0:
        return {"perplexity": None, "nll_per_token": None, "num_tokens": 0, "num_authors": 0,
                **({"ci95": None} if bootstrap else {})}
    sums = np.bincount(author[mask], weights=nll[mask], minlength=n_authors)
    kept = count > 0
    if metric is not None:
        out = metric.compute(nll_sums=sums[kept].tolist(), token_counts=count[kept].tolist())
        ppl, per_token = out["perplexity"], out["nll_per_token"]
    else:
        per_token = float(sums.sum() / count.sum())
        ppl = math.exp(per_token) if per_token < 700 else math.inf
    result = {"perplexity": ppl, "nll_per_token": per_token, "num_tokens": int(count.sum()),
              "num_authors": int(kept.sum())}
    if bootstrap:
        samples, seed = bootstrap
        weights = author_resamples(int(kept.sum()), samples, seed)
        per_token_drawn = weights @ sums[kept] / (weights @ count[kept])
        result["ci95"] = np.exp(np.minimum(np.percentile(per_token_drawn, [2.5, 97.5]), 700)).tolist()
    return result


def paired_bootstrap(nll_a: np.ndarray, nll_b: np.ndarray, author: np.ndarray, *, samples: int = 1000,
                     seed: int = 0, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Difference between two variants' perplexities on the same tokens, resampling authors with replacement.

    Returns point estimates (all authors) and 95 % percentile intervals: perplexity_a, perplexity_b,
    delta_perplexity (a - b) and ci95, ratio (a / b) and ratio_ci95, share_a_better (bootstrap share with a < b).
    """
    mask = np.ones(len(author), bool) if mask is None else mask
    _, who = np.unique(author[mask], return_inverse=True)
    n = np.bincount(who).astype(float)
    if len(n) == 0:
        return {"num_tokens": 0, "num_authors": 0}
    sa, sb = np.bincount(who, weights=nll_a[mask]), np.bincount(who, weights=nll_b[mask])
    la, lb = sa.sum() / n.sum(), sb.sum() / n.sum()
    weights = author_resamples(len(n), samples, seed)
    tokens = weights @ n
    ba, bb = weights @ sa / tokens, weights @ sb / tokens
    delta, log_ratio = np.exp(ba) - np.exp(bb), ba - bb
    return {
        "perplexity_a": math.exp(la), "perplexity_b": math.exp(lb),
        "delta_perplexity": math.exp(la) - math.exp(lb), "ci95": np.percentile(delta, [2.5, 97.5]).tolist(),
        "ratio": math.exp(la - lb), "ratio_ci95": np.exp(np.percentile(log_ratio, [2.5, 97.5])).tolist(),
        "share_a_better": float((log_ratio < 0).mean()), "num_tokens": int(n.sum()), "num_authors": len(n),
    }


def summarize(scores: TokenScores, *, history_buckets: Sequence[int] = DEFAULT_HISTORY_BUCKETS,
              bootstrap_samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The JSON-ready report of `evaluate_perplexity` (format in its docstring)."""
    from hullama.eval.metrics import load_metric

    edges = sorted(set(history_buckets) | {0})
    metric = load_metric("perplexity_from_loss")
    n_authors = len(scores.authors)
    everything = np.ones(len(scores.author), bool)
    history_masks = {name: (scores.history >= lo) & (scores.history < hi)
                     for name, lo, hi in zip(_bucket_names(edges), edges, [*edges[1:], np.inf])}
    block_masks = {"1": scores.block == 0, "2+": scores.block >= 1}
    variants = {}
    interval = (bootstrap_samples, seed) if bootstrap_samples else None
    for v, nll in scores.nll.items():
        ppl = _perplexity(nll, scores.author, n_authors, everything, metric)
        variants[v] = {
            **ppl,
            "seconds": scores.seconds[v],
            "seconds_per_1k_tokens": 1000 * scores.seconds[v] / max(1, ppl["num_tokens"]),
            "by_history": {k: _perplexity(nll, scores.author, n_authors, m, bootstrap=interval)
                           for k, m in history_masks.items()},
            "by_block": {k: _perplexity(nll, scores.author, n_authors, m, bootstrap=interval)
                         for k, m in block_masks.items()},
            "by_block_index": {str(k + 1): _perplexity(nll, scores.author, n_authors, scores.block == k,
                                                       bootstrap=interval)
                               for k in range(int(scores.block.max()) + 1)},
        }
    comparisons = []
    for a, b in COMPARISONS:
        if a in scores.nll and b in scores.nll:
            for subset, mask in (("all", None), ("blocks 2+", block_masks["2+"])):
                result = paired_bootstrap(scores.nll[a], scores.nll[b], scores.author, samples=bootstrap_samples,
                                          seed=seed, mask=mask)
                comparisons.append({"a": a, "b": b, "tokens": subset, **result})
    report = {
        "num_authors": n_authors, "num_tokens": int(len(scores.author)), "variants": variants,
        "comparisons": comparisons, "skipped": dict(scores.skipped),
        "bootstrap": {"unit": "author", "samples": bootstrap_samples, "seed": seed, "interval": "95% percentile"},
    }
    if "recurrent" in scores.seconds and "in_context" in scores.seconds:
        report["time_ratio_recurrent_over_in_context"] = scores.seconds["recurrent"] / scores.seconds["in_context"]
    return report


def evaluate_perplexity(model: torch.nn.Module, tokenizer: Any, corpus: Corpus, *, block_size: int = 256,
                        max_blocks: int | None = None, context_window: int | None = None,
                        variants: Sequence[str] = VARIANTS, zeroed_state: bool = True, batch_size: int = 4,
                        blocks_per_forward: int | None = 16, device: str | torch.device | None = None,
                        history_buckets: Sequence[int] = DEFAULT_HISTORY_BUCKETS, bootstrap_samples: int = 1000,
                        seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Held-out perplexity of `model` on `corpus` for `variants` (+ the zeroed-state ablation), on the same tokens.

    Returns a JSON-ready dict:
      settings {block_size, context_window, max_blocks, batch_size, history_buckets}, num_authors, num_tokens,
      variants {name: {perplexity, nll_per_token, num_tokens, num_authors, seconds, seconds_per_1k_tokens,
                by_history {"0-255": {perplexity, nll_per_token, num_tokens, num_authors, ci95}, ...},
                by_block {"1": ..., "2+": ...}, by_block_index {"1": ..., "2": ..., ...}}},
      comparisons [{a, b, tokens ("all" | "blocks 2+"), perplexity_a, perplexity_b, delta_perplexity, ci95,
                    ratio, ratio_ci95, share_a_better, num_tokens, num_authors}],
      skipped {variant: reason}, bootstrap {unit, samples, seed, interval},
      time_ratio_recurrent_over_in_context (when both ran).
    """
    scores = score_variants(model, tokenizer, corpus, block_size=block_size, max_blocks=max_blocks,
                            context_window=context_window, variants=variants, zeroed_state=zeroed_state,
                            batch_size=batch_size, blocks_per_forward=blocks_per_forward, device=device,
                            progress=progress)
    report = summarize(scores, history_buckets=history_buckets, bootstrap_samples=bootstrap_samples, seed=seed)
    settings = {"block_size": block_size, "context_window": context_window or block_size, "max_blocks": max_blocks,
                "batch_size": batch_size, "history_buckets": list(history_buckets), "corpus": corpus.source}
    return {"settings": settings, **report}


def format_results(results: dict[str, Any]) -> str:
    """A few lines for a log: perplexity per variant (overall, block 1, blocks 2+) and the bootstrap comparisons."""
    def num(x):
        return "-" if x is None else f"{x:.3f}"

    lines = [f"perplexity on {results['num_tokens']:,} tokens of {results['num_authors']} authors",
             f"  {'variant':<24}{'all':>10}{'block 1':>10}{'blocks 2+':>11}"]
    for v, r in results["variants"].items():
        lines.append(f"  {v:<24}{num(r['perplexity']):>10}{num(r['by_block']['1']['perplexity']):>10}"
                     f"{num(r['by_block']['2+']['perplexity']):>11}")
    for c in results["comparisons"]:
        if "ci95" in c:
            lines.append(f"  {c['a']} - {c['b']} ({c['tokens']}): {c['delta_perplexity']:+.3f} "
                         f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], ratio {c['ratio']:.4f}")
    lines += [f"  skipped {v}: {why}" for v, why in results["skipped"].items()]
    return "\n".join(lines)


def plot_results(results: dict[str, Any], path: str | Path) -> Path:
    """`perplexity_figure` saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = perplexity_figure(results)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def perplexity_figure(results: dict[str, Any]):
    """Perplexity per variant by history bucket (left) and by block index (right), each value with its 95 %
    interval over authors and the authors (and tokens) behind it; both y-axes start at 0, so bar heights compare;
    the title names the model and the corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def values_and_errors(entries: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([e["perplexity"] if e["perplexity"] is not None else np.nan for e in entries], float)
        intervals = np.array([e.get("ci95") or [np.nan, np.nan] for e in entries], float)
        return values, np.abs(np.stack([values - intervals[:, 0], intervals[:, 1] - values]))

    variants, settings = results["variants"], results.get("settings", {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    buckets = list(next(iter(variants.values()))["by_history"])
    width = 0.8 / max(1, len(variants))
    for i, (v, r) in enumerate(variants.items()):
        entries = [r["by_history"][b] for b in buckets]
        values, errors = values_and_errors(entries)
        left.bar(np.arange(len(buckets)) + i * width, values, width, yerr=errors, capsize=3,
                 label=f"{v} ({r['perplexity']:.2f})")
        blocks = list(r["by_block_index"])
        values, errors = values_and_errors([r["by_block_index"][b] for b in blocks])
        right.errorbar([int(b) + 0.06 * (i - (len(variants) - 1) / 2) for b in blocks], values, yerr=errors,
                       marker="o", capsize=3, label=v)
    # the authors and tokens behind each bucket (the same for every variant: all score the same tokens)
    first = next(iter(variants.values()))
    left.set_xticks(np.arange(len(buckets)) + width * (len(variants) - 1) / 2,
                    [f"{b}\n{first['by_history'][b]['num_authors']} authors\n{first['by_history'][b]['num_tokens']:,} tok"
                     for b in buckets])
    blocks = list(first["by_block_index"])
    right.set_xticks([int(b) for b in blocks], [f"{b}\n{first['by_block_index'][b]['num_authors']}" for b in blocks])
    for axis in (left, right):
        axis.set_ylim(bottom=0)
        axis.set_ylabel("perplexity (axis from 0; bars: 95 % interval over authors)")
        axis.legend(fontsize=8)
    left.set_xlabel("preceding stream tokens of the author")
    right.set_xlabel("block index (recurrent layout) / authors with that block")
    left.set_title(f"by history: {results['num_tokens']:,} tokens, {results['num_authors']} authors", fontsize=10)
    right.set_title(f"by block, block size {settings.get('block_size', '?')}", fontsize=10)
    model = settings.get("model") or "model"
    if settings.get("adapter"):
        model += f" + adapter {settings['adapter']}"
    fig.suptitle(f"{model} on {settings.get('corpus', 'corpus')}", fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- CLI


def synthetic_heldout() -> Corpus:
    """The embedded synthetic corpus's held-out split (see the module docstring)."""
    from hullama.data.corpus import load_corpus, split_by_author
    from hullama.data.synthetic import synthetic_corpus

    frame = synthetic_corpus(seed=0)
    corpus = load_corpus(frame[["user_id", "message_id", "timestamp", "message"]])
    held_out = split_by_author(corpus, seed=0)["test"]
    held_out.report.source = "synthetic_corpus(seed=0), split_by_author(seed=0) [test]"
    return replace(held_out, source=held_out.report.source)


def load_eval_corpus(data: str, split: str = "test", max_authors: int | None = None,
                     dataset_name: str | None = None, dataset_config_name: str | None = None) -> Corpus:
    """--data (or --dataset_name) resolved to a Corpus (raises FileNotFoundError / ValueError with one-line
    messages)."""
    from hullama.data.corpus import CorpusError, NamedDataset, load_corpus

    if dataset_name:
        if data != "synthetic":
            raise ValueError("--data and --dataset_name both name the corpus: give one")
        try:
            corpus = load_corpus(NamedDataset(dataset_name, dataset_config_name, split))
        except CorpusError as e:
            raise ValueError(str(e).splitlines()[0]) from None
    elif dataset_config_name:
        raise ValueError("--dataset_config_name belongs to --dataset_name, which is not given")
    elif data == "synthetic":
        corpus = synthetic_heldout()
    else:
        if not Path(data).exists():
            raise FileNotFoundError(f"--data: no such file or folder: {data}")
        try:
            corpus = load_corpus(data, split=split)
        except CorpusError as e:
            raise ValueError(str(e).splitlines()[0]) from None
    if max_authors is not None:
        corpus = corpus.subset(corpus.authors[:max_authors], f"first {max_authors} authors")
    if len(corpus) == 0:
        raise ValueError(f"{corpus.source}: no messages to evaluate")
    return corpus


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = perplexity_parser()
    (args,) = parser.parse(argv)
    check_common_args(parser, args, ("batch_size", "blocks_per_forward", "bootstrap_samples", "max_blocks",
                                     "context_window", "max_authors"))
    try:
        buckets = [int(x) for x in args.history_buckets.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--history_buckets must be comma-separated integers, got {args.history_buckets!r}")
    if not buckets or any(b < 0 for b in buckets):
        parser.error(f"--history_buckets must be non-negative integers, got {args.history_buckets!r}")
    if args.max_authors is not None and args.max_authors < 1:
        parser.error("--max_authors must be at least 1")
    try:
        corpus = load_eval_corpus(args.data, args.split, args.max_authors, args.dataset_name,
                                  args.dataset_config_name)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    from hullama.eval.features import load_model

    try:
        model, tokenizer = load_model(args.model_name_or_path, adapter=args.adapter, tokenizer=args.tokenizer,
                                      as_hullama=args.as_hullama, dtype=args.dtype, device=args.device)
    except (FileNotFoundError, OSError, ValueError) as e:
        parser.error(str(e).splitlines()[0])
    config = model_parts(model).model.config
    block_size = args.block_size or getattr(config, "block_size", None) or min(256, config.max_position_embeddings)
    if not 2 <= block_size <= config.max_position_embeddings:
        parser.error(f"--block_size {block_size} must be in [2, max_position_embeddings="
                     f"{config.max_position_embeddings}]")
    if args.context_window is not None and args.context_window > config.max_position_embeddings:
        parser.error(f"--context_window {args.context_window} must be at most max_position_embeddings="
                     f"{config.max_position_embeddings}")
    try:
        results = evaluate_perplexity(model, tokenizer, corpus, block_size=block_size, max_blocks=args.max_blocks,
                                      context_window=args.context_window, variants=args.variants,
                                      zeroed_state=not args.no_zeroed_state, batch_size=args.batch_size,
                                      blocks_per_forward=args.blocks_per_forward,
                                      history_buckets=buckets, bootstrap_samples=args.bootstrap_samples,
                                      seed=args.seed)
    except ValueError as e:
        parser.error(str(e).splitlines()[0])
    results["settings"].update(model=args.model_name_or_path, adapter=args.adapter, data=str(corpus.source))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "perplexity.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_results(results, out / "perplexity.png")
    print(format_results(results))
    print(f"wrote {out / 'perplexity.json'} and {out / 'perplexity.png'}")
    return results


if __name__ == "__main__":
    main()
