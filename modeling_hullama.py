"""HuLlama: a Llama that reads an author's history block by block and carries an author state between blocks.

Shapes: B authors, K blocks per author, T tokens per block, H hidden size, S state size.
An author's time-ordered messages are cut into K blocks of T tokens. Positions restart in every block and no
token attends to another block; the only thing that crosses blocks is the author state U (B x S):

    U_0 = learned initial state
    block k reads U_{k-1} at `insert_layer`, by `config.state_mechanism` (V = U, or RMSNorm(U) if
    `normalize_injected_state`):
        "query":  q = q_proj(x) + W_q V                                   (W_q = 0 at start)
        "gate":   h = h + tanh(a) W_r V, before the layer                 (a = 0 at start, W_r random)
        "memory": o = o_proj(attn(x) + tanh(a_h) softmax(q_h K_h^T / sqrt(d)) V_h), with K, V = m slots
                  projected from V per key-value head, q_h the layer's query before rotary positions
                                                                          (a = 0 at start, K, V random)
    h_k = output of `extract_layer`, pooled over block k's real tokens (last token or mean)
    U_k = tanh(RMSNorm(W_u U_{k-1} + W_h RMSNorm(h_k)))   (an all-padding block leaves U unchanged; the outer
                                                            RMSNorm is `normalize_state_update`, on by default)

Every injection path adds exactly zero at start, so an untrained HuLlama computes exactly what its Llama base
computes. Hub code: imports torch, transformers and the configuration module only.

Diagnostics on every output, one value per row `[B]` (detached; NaN for a row without real tokens, None where
undefined), so that they split per example like every other output (pipelines batch them):
    state_abs_mean: mean |U_k| over the elements of the row's states after its real blocks (saturation: 1)
    injection_norm: mean over the row's real tokens of the L2 norm of the vector the state adds at the
        insertion point of that token: the query offset (query), the residual-stream addition (gate), the gated
        memory read added to the attention output before o_proj (memory)
`ablate_state=True` injects U_0 into every block instead of the carried state; everything else, the recurrence
included, runs unchanged (the zeroed-state ablation of every evaluation).
"""

import json
import math
from contextlib import contextmanager
from pathlib import Path
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutputWithPast
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.utils import can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg

try:  # as Hub code, next to the configuration file
    from .configuration_hullama import HuLlamaConfig
except ImportError:  # installed as top-level modules
    from configuration_hullama import HuLlamaConfig


logger = logging.get_logger(__name__)

# transformers 5.24 renamed the key-value cache from `past_key_values` to `cache`: the output field, the keyword of
# forward, of the decoder layers and attention, and what `generate` passes (the old name is deprecated until 5.40).
# HuLlama speaks the installed release's name to transformers and accepts either name from its callers.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _the_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The one cache a caller passed, under the new name (`cache`) or the old one (`past_key_values`)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the key-value cache once, as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


if CACHE_NAME == "cache":
    # As upstream's own forwards do: the old name still works, with transformers' deprecation warning.
    accept_old_cache_name = deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
else:

    def accept_old_cache_name(forward):  # before 5.24 `past_key_values` is the name; `_the_cache` takes either
        return forward


@dataclass
class AuthorStateOutput:
    """The author-state fields that every HuLlama output adds to its transformers output class.

    Listed first among the bases of each output, so that transformers' fields keep their places (the first field
    stays `loss` or `last_hidden_state`, as tuples and indexing expect) and the state fields follow them.

    author_states: `[B, K, S]`, the state after each block (an all-padding block repeats the previous state).
    final_author_state: `[B, S]`, the state after the last block: pass it as `author_state` to continue.
    block_mask: `[B, K]`, True for blocks that hold at least one real token.
    block_summaries: `[B, K, H]`, each block's pooled output of `extract_layer` (h_k in the module docstring, before
        its RMSNorm; zeros for all-padding blocks): with the state before block k it gives U_k again, which is how a
        training schedule that carries states across steps lets the recurrence learn (train/schedule.py).
    The four state fields are None during cached decoding, where no block is completed.
    state_abs_mean: `[B]`, detached, mean |U| over the row's states after real blocks (None in cached decoding).
    injection_norm: `[B]`, detached, mean over the row's real tokens of the L2 norm of what the state adds at the
        insertion point (see the module docstring); None where no token is real.
    """

    author_states: torch.FloatTensor | None = None
    final_author_state: torch.FloatTensor | None = None
    block_mask: torch.BoolTensor | None = None
    block_summaries: torch.FloatTensor | None = None
    state_abs_mean: torch.FloatTensor | None = None
    injection_norm: torch.FloatTensor | None = None


@dataclass
class HuLlamaModelOutput(AuthorStateOutput, BaseModelOutputWithPast):
    """Llama's base output (last_hidden_state `[B, T, H]` for a single-block input, else `[B, K, T, H]`; the cache;
    hidden_states) plus the author-state fields."""


@dataclass
class HuLlamaCausalLMOutput(AuthorStateOutput, CausalLMOutputWithPast):
    """Llama's causal-LM output (loss, logits, the cache, hidden_states) plus the author-state fields."""


@dataclass
class HuLlamaSequenceClassifierOutput(AuthorStateOutput, SequenceClassifierOutputWithPast):
    """Llama's classifier output plus the author-state fields; logits `[B, C]` (a single-block input, or author
    level), else `[B, K, T, C]` at every token."""


class StateLinear(nn.Module):
    """`x W^T + b` with float32 parameters, for the author-state modules.

    Not an `nn.Linear` on purpose: quantizers (bitsandbytes among them) replace every `nn.Linear` they are not told to
    skip, and a user's own quantization config would not name these. Parameter names are nn.Linear's.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=torch.float32)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class ZeroInitLinear(StateLinear):
    """A linear map that starts at exactly zero (see `_init_weights`): a new path that adds nothing until trained.

    It is its own class so that weight initialisation can single it out, also after a trust_remote_code load.
    """


class FanInLinear(StateLinear):
    """A linear map drawn with std `init_gain / sqrt(in_features)` and zero bias (see `_init_weights`), so that its
    output has about `init_gain` times the RMS of its input whatever the width."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_gain: float = 1.0):
        super().__init__(in_features, out_features, bias=bias)
        self.init_gain = init_gain


class TanhGate(nn.Module):
    """`tanh(alpha)`, alpha learned and zero at start (see `_init_weights`): a path that opens only when trained.

    Unlike a zero weight, a zero gate in front of a random projection gets a gradient at once."""

    def __init__(self, size: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(size))

    def forward(self) -> torch.Tensor:
        return torch.tanh(self.alpha)


@dataclass
class StateMemory:
    """The memory slots of one block for `HuLlamaAttention`: keys and values `[b, kv_heads, m, head_dim]`, the gate
    `[heads]`; the attention writes the per-token norm of the gated read `[b, T]` (detached) into `token_norms`."""

    keys: torch.Tensor
    values: torch.Tensor
    gate: torch.Tensor
    token_norms: torch.Tensor | None = None


@dataclass
class Injection:
    """What the author state puts into `insert_layer` for a batch of b blocks (one field per mechanism):
    `residual` `[b, H]` added to the layer's input (gate), `query_offset` `[b, heads * head_dim]` added to its
    attention's query (query), `memory` slots its attention reads (memory)."""

    residual: torch.Tensor | None = None
    query_offset: torch.Tensor | None = None
    memory: StateMemory | None = None

    def token_norms(self) -> torch.Tensor:
        """`[b, 1]` (the same for every token of a block) or `[b, T]` (a memory read, per token): the L2 norm of what
        the state adds, detached. A memory's is known once its layer has run."""
        if self.memory is not None:
            return self.memory.token_norms.float()
        added = self.residual if self.residual is not None else self.query_offset
        return added.detach().norm(dim=-1).float().unsqueeze(-1)


@dataclass
class LayerRecord:
    """What a pass through the layers records where the caller asks for it: the hidden states (each layer's input,
    then the last layer's output after the final norm, as Llama returns them) and each layer's attention weights."""

    hidden: list | tuple | None = None
    attentions: list | tuple | None = None

    @classmethod
    def asked(cls, hidden: bool, attentions: bool) -> "LayerRecord":
        return cls([] if hidden else None, [] if attentions else None)

    def empty_like(self) -> "LayerRecord":
        return LayerRecord.asked(self.hidden is not None, self.attentions is not None)

    def start(self, embeds: torch.Tensor) -> None:
        if self.hidden is not None:
            self.hidden.append(embeds)

    def finish(self, normed: torch.Tensor) -> None:
        if self.hidden is not None:
            self.hidden[-1] = normed

    @contextmanager
    def attention_of(self, attention: nn.Module):
        """Record the attention weights `attention` returns during the block (none under SDPA, as in Llama)."""
        if self.attentions is None:
            yield
            return

        def keep_weights(module, args, output):
            if output[1] is not None:
                self.attentions.append(output[1])

        hook = attention.register_forward_hook(keep_weights)
        try:
            yield
        finally:
            hook.remove()

    def map(self, fn) -> "LayerRecord":
        return LayerRecord(*(None if kept is None else [fn(t) for t in kept] for kept in (self.hidden, self.attentions)))

    def as_tuples(self) -> "LayerRecord":
        return LayerRecord(*(None if kept is None else tuple(kept) for kept in (self.hidden, self.attentions)))

    @staticmethod
    def stack(per_block: list["LayerRecord"], single_block: bool) -> "LayerRecord":
        """Records of K blocks -> one record whose tensors are `[B, K, ...]` (`[B, ...]` for a single block), layer by
        layer."""
        first = per_block[0]
        return LayerRecord(*(
            None if getattr(first, field) is None
            else tuple(_per_block(layer, single_block) for layer in zip(*(getattr(r, field) for r in per_block)))
            for field in ("hidden", "attentions")
        ))


@dataclass
class BlocksRun:
    """What running K blocks gives: final hidden states `[B, K, T, H]`, the state after each block (a list of K
    `[B, S]`), the block summaries `[B, K, H]` (None in a cached decoding step), the layer record (`[B, K, ...]`
    tensors), and per row (sum over its real tokens of the injection's norm, its number of real tokens). For a
    single-block input the hidden states and the record are `[B, ...]`, without the block axis."""

    hidden: torch.Tensor
    states: list
    summaries: torch.Tensor | None
    record: LayerRecord
    injected: tuple


def _row_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Per row: total / count, NaN where the count is 0 (nothing to average)."""
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def _per_block(tensors, single_block: bool) -> torch.Tensor:
    """K tensors `[B, ...]`, one per block -> `[B, K, ...]`; for a single-block input the block's tensor itself, so
    that the outputs are the tensors the forward computed with (their gradients reach them, as in Llama)."""
    return tensors[0] if single_block else torch.stack(tensors, 1)


def _keep_selected(hidden_states: tuple, selection) -> tuple:
    """The hidden states `output_hidden_states=index or indices` selects (negative ones count from the end), None for
    the others, as transformers' output capturing returns them."""
    count = len(hidden_states)
    selection = [selection] if isinstance(selection, int) else list(selection)
    kept = {i % count for i in selection if -count <= i < count}
    return tuple(h if i in kept else None for i, h in enumerate(hidden_states))


class AuthorState(nn.Module):
    """The new modules: initial state, block-summary normalisation, recurrence and the injection at `insert_layer`.

    They stay in float32 whatever the base's dtype or quantization, and cast at their borders.
    """

    def __init__(self, config: HuLlamaConfig):
        super().__init__()
        self.mechanism = config.state_mechanism
        self.initial_state = nn.Parameter(torch.zeros(config.state_size))
        self.summary_norm = (
            LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            if config.normalize_extracted_state
            else nn.Identity()
        )
        scale = float(config.state_init_scale)
        self.state_to_state = FanInLinear(config.state_size, config.state_size, init_gain=scale)
        self.summary_to_state = FanInLinear(config.hidden_size, config.state_size, init_gain=scale)
        self.update_norm = (
            LlamaRMSNorm(config.state_size, eps=config.rms_norm_eps)
            if config.normalize_state_update
            else nn.Identity()
        )
        self.state_norm = (
            LlamaRMSNorm(config.state_size, eps=config.rms_norm_eps)
            if config.normalize_injected_state
            else nn.Identity()
        )
        if self.mechanism == "query":
            self.state_to_query = ZeroInitLinear(
                config.state_size, config.num_attention_heads * config.head_dim, bias=False
            )
        elif self.mechanism == "gate":
            self.state_to_residual = FanInLinear(config.state_size, config.hidden_size, bias=False)
            self.residual_gate = TanhGate(1)
        else:  # memory
            self.memory_shape = (config.state_memory_tokens, config.num_key_value_heads, config.head_dim)
            slots = config.state_memory_tokens * config.num_key_value_heads * config.head_dim
            self.state_to_memory_keys = FanInLinear(config.state_size, slots, bias=False)
            self.state_to_memory_values = FanInLinear(config.state_size, slots, bias=False)
            self.memory_gate = TanhGate(config.num_attention_heads)
        # float32 whatever the dtype the model is built in (`_keep_in_fp32_modules_strict` keeps it so when loading).
        self.to(torch.float32)

    # Method names avoid those of peft's ModulesToSaveWrapper (update, forward, ...), which wraps this module.
    def initial_states(self, batch_size: int) -> torch.Tensor:
        return self.initial_state.unsqueeze(0).expand(batch_size, -1)

    def advance(self, state: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        dtype = self.state_to_state.weight.dtype
        summary = self.summary_norm(summary.to(dtype))
        return torch.tanh(self.update_norm(self.state_to_state(state.to(dtype)) + self.summary_to_state(summary)))

    def step(self, state: torch.Tensor, summary: torch.Tensor, real: torch.Tensor, detach: bool) -> torch.Tensor:
        """The state after a block, for every row of the batch: advanced where the block is `real` `[b]` (a padding
        block carries the state unchanged), cut from the graph when `detach` (truncated backpropagation)."""
        state = torch.where(real[:, None], self.advance(state, summary).to(state.dtype), state)
        return state.detach() if detach else state

    def injection(self, state: torch.Tensor) -> Injection:
        """What the state `[b, S]` puts into `insert_layer` (see `Injection`)."""
        state = self.state_norm(state.to(self.initial_state.dtype))
        if self.mechanism == "query":
            return Injection(query_offset=self.state_to_query(state))
        if self.mechanism == "gate":
            return Injection(residual=self.residual_gate() * self.state_to_residual(state))
        shape = (state.shape[0], *self.memory_shape)  # [b, m, kv_heads, head_dim] -> [b, kv_heads, m, head_dim]
        keys = self.state_to_memory_keys(state).view(shape).transpose(1, 2)
        values = self.state_to_memory_values(state).view(shape).transpose(1, 2)
        return Injection(memory=StateMemory(keys, values, self.memory_gate()))


def _read_memory(query: torch.Tensor, memory: StateMemory, scaling: float) -> torch.Tensor:
    """query `[b, heads, T, d]` (no rotary positions) attends to the memory slots; returns the gated read `[b, T, heads, d]`."""
    groups = query.shape[1] // memory.keys.shape[1]
    keys = memory.keys.repeat_interleave(groups, dim=1)  # head h reads key-value head h // groups, as repeat_kv
    values = memory.values.repeat_interleave(groups, dim=1)
    query = query.to(keys.dtype)
    weights = torch.softmax(torch.matmul(query, keys.transpose(-1, -2)) * scaling, dim=-1)
    read = torch.matmul(weights, values) * memory.gate.to(keys.dtype).view(1, -1, 1, 1)
    read = read.transpose(1, 2)
    memory.token_norms = read.detach().flatten(2).norm(dim=-1)
    return read


class HuLlamaAttention(LlamaAttention):
    """Llama attention that may receive the author state (set by its `HuLlamaDecoderLayer` for one call): a
    per-sequence offset to the query, or memory slots read with the query and added, gated, to the attention output
    before `o_proj`.

    Same parameters as LlamaAttention (a Llama checkpoint loads as is), and Llama's own forward runs: the state
    enters through hooks on `q_proj`'s output and `o_proj`'s input for the length of one call, so that everything
    else (rotary positions, the cache, the attention implementations) is upstream's, whatever the release.
    """

    injection: Injection | None = None

    def forward(self, hidden_states, *args, **kwargs):
        state_query_offset = self.injection.query_offset if self.injection is not None else None
        state_memory = self.injection.memory if self.injection is not None else None
        if state_query_offset is None and state_memory is None:
            return super().forward(hidden_states, *args, **kwargs)
        memory_read = []

        def add_state_to_query(module, inputs, query):  # query [b, T, heads * head_dim]
            if state_query_offset is not None:  # [b, heads * head_dim], the same for every token of the block
                query = query + state_query_offset.to(query.dtype).unsqueeze(1)
            if state_memory is not None:  # read with the query before rotary positions: [b, heads, T, head_dim]
                heads = query.view(*query.shape[:-1], -1, self.head_dim).transpose(1, 2)
                memory_read.append(_read_memory(heads, state_memory, self.scaling))
            return query

        def add_memory_read(module, inputs):  # the attention output [b, T, heads * head_dim], before o_proj
            (attn_output, *rest) = inputs
            return (attn_output + memory_read.pop().flatten(2).to(attn_output.dtype), *rest)

        hooks = [self.q_proj.register_forward_hook(add_state_to_query)]
        if state_memory is not None:
            hooks.append(self.o_proj.register_forward_pre_hook(add_memory_read))
        try:
            return super().forward(hidden_states, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()


class HuLlamaDecoderLayer(LlamaDecoderLayer):
    """The Llama decoder layer at `insert_layer`, which owns the author state's injection: a gate's residual is added
    to its input, a query offset or memory slots go to its attention for the call. Same parameters as
    LlamaDecoderLayer; without an injection it is Llama's layer."""

    def __init__(self, config: HuLlamaConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.self_attn = HuLlamaAttention(config, layer_idx)

    def forward(self, hidden_states, *args, injection: Injection | None = None, **kwargs):
        if injection is None:
            return super().forward(hidden_states, *args, **kwargs)
        if injection.residual is not None:  # [b, H], the same for every token of the block
            hidden_states = hidden_states + injection.residual.to(hidden_states.dtype).unsqueeze(1)
        self.self_attn.injection = injection
        try:
            return super().forward(hidden_states, *args, **kwargs)
        finally:
            self.self_attn.injection = None


class HuLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = HuLlamaConfig
    config: HuLlamaConfig
    # The new modules are small and must not lose precision: float32 under fp16 and bf16 (strict), built in float32,
    # and never quantized (their linear maps are StateLinear, which quantizers do not replace).
    _keep_in_fp32_modules_strict = ["author_state"]
    # A Llama checkpoint (an adapter's HuLlama base among them) has no author-state weights: they start at their
    # initial values by design (an adapter then restores its own), so their absence is no missing-weights warning.
    _keys_to_ignore_on_load_missing = [r"author_state\."]
    # The layer at `insert_layer` is a HuLlamaDecoderLayer: neither kind is split across devices.
    _no_split_modules = ["LlamaDecoderLayer", "HuLlamaDecoderLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ZeroInitLinear):
            init.zeros_(module.weight)
        elif isinstance(module, FanInLinear):
            init.normal_(module.weight, mean=0.0, std=module.init_gain / math.sqrt(module.in_features))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, TanhGate):
            init.zeros_(module.alpha)
        elif isinstance(module, AuthorState):
            init.zeros_(module.initial_state)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        base = _local_adapter_base(pretrained_model_name_or_path)
        if base is not None:  # a local adapter output: its base, then the adapter on it, as transformers loads adapters
            kwargs["adapter_kwargs"] = {**(kwargs.get("adapter_kwargs") or {}),
                                        "_adapter_model_path": str(pretrained_model_name_or_path)}
            pretrained_model_name_or_path = base
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        keep_cpu_4bit_weights_unpacked(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded  # (model, loading info) with output_loading_info=True

    def author_inputs(self, tokenizer, authors: list[list[str]]) -> dict:
        """`author_inputs` with this model's `block_size`: authors' messages laid out as in training."""
        return author_inputs(tokenizer, authors, self.config.block_size)

    def encode_authors(self, input_ids, attention_mask=None, author_state=None):
        """Many authors' states at once (see `HuLlamaModel.encode_authors`)."""
        return self.model.encode_authors(input_ids, attention_mask=attention_mask, author_state=author_state)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        # Reentrant checkpointing gives no gradient to keyword tensors, and the state offset is one.
        checkpoint_kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if checkpoint_kwargs["use_reentrant"]:
            raise ValueError("HuLlama needs non-reentrant activation checkpointing (use_reentrant=False)")
        super().activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs, **kwargs)


def stream_blocks(stream: list[int], block_size: int, start_token_id: int) -> list[list[int]]:
    """An author's token stream (every message's tokens, each followed by the separator) cut into blocks: the start
    token, then the next `block_size - 1` stream tokens. Training, the handler and `author_inputs` all cut so."""
    step = block_size - 1
    return [[start_token_id] + stream[s : s + step] for s in range(0, len(stream), step)]


def author_inputs(tokenizer, authors: list[list[str]], block_size: int) -> dict:
    """Authors' time-ordered messages (a list of messages, oldest first, per author) as HuLlama inputs.

    Every message's tokens are followed by the separator (the tokenizer's eos), and each author's stream is cut by
    `stream_blocks` (start token: bos, else the separator). Returns `input_ids` and `attention_mask`
    `[authors, blocks, tokens]` (padded to the longest author) and `message_ends`: per author, the (block, position)
    of each message's last token, where a message-level head reads it (None for a message with no token, which is
    left out as in training)."""
    separator = tokenizer.eos_token_id
    if separator is None:
        raise ValueError("the tokenizer has no eos token, which HuLlama uses to separate messages")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else separator
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else separator
    step, layouts, ends = block_size - 1, [], []
    for messages in authors:
        stream, author_ends = [], []
        for text in messages:
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not tokens:  # left out of the stream, as in training (no separator either)
                author_ends.append(None)
                continue
            stream += tokens
            block, offset = divmod(len(stream) - 1, step)
            author_ends.append((block, offset + 1))  # + 1: the start token opens the block
            stream.append(separator)
        layouts.append(stream_blocks(stream, block_size, start) or [[start]])
        ends.append(author_ends)
    shape = (len(layouts), max(len(blocks) for blocks in layouts), max(len(b) for bs in layouts for b in bs))
    input_ids = torch.full(shape, pad, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    for a, blocks in enumerate(layouts):
        for k, block in enumerate(blocks):
            input_ids[a, k, : len(block)] = torch.tensor(block)
            attention_mask[a, k, : len(block)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "message_ends": ends}


def _local_adapter_base(path) -> str | None:
    """The base of a local adapter folder (adapter_config.json, no model weights), else None.

    transformers takes a local folder holding a config.json for a full model with an embedded adapter and looks for
    weights in it; a HuLlama adapter output holds config.json (for its auto_map) next to the adapter alone. A base
    named by a path that no longer exists (the output was moved) is looked for beside the adapter (`../hullama-base`,
    where training saves it)."""
    folder = Path(str(path))
    if not (folder / "adapter_config.json").is_file() or any((folder / name).is_file() for name in (
            "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        return None
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if base and not Path(base).exists() and (folder.parent / "hullama-base" / "config.json").is_file():
        return str(folder.parent / "hullama-base")
    return base


def keep_cpu_4bit_weights_unpacked(model: nn.Module) -> nn.Module:
    """Turn off bitsandbytes' AVX512-BF16 weight repacking in every 4-bit linear layer.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight in place at the first eval-mode forward;
    a later state_dict() (adapter save, checkpoint) then silently corrupts the base weights. Checked by attribute
    so that this file needs no bitsandbytes import.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def _pool_block(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[b, T, H] -> [b, H]: the last real token (left or right padding) or the mean over real tokens."""
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    positions = torch.arange(mask.shape[-1], device=mask.device)
    last = (positions * mask.bool()).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class HuLlamaModel(HuLlamaPreTrainedModel):
    """The Llama decoder run block by block with the author state; parameter names are Llama's plus `author_state.*`."""

    def __init__(self, config: HuLlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([
            (HuLlamaDecoderLayer if i == config.insert_layer else LlamaDecoderLayer)(config, i)
            for i in range(config.num_hidden_layers)
        ])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.author_state = AuthorState(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    @can_return_tuple
    @accept_old_cache_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        author_state: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        ablate_state: bool = False,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> HuLlamaModelOutput:
        """Input `[B, T]` (one block) or `[B, K, T]` (K blocks in time order; the same for masks and positions).

        `author_state` `[B, S]` is the state before the first block (default: the learned initial state).
        `ablate_state=True` injects the learned initial state into every block instead of the carried state; the
        recurrence still runs from `author_state` and its states are returned (the zeroed-state ablation).
        Cached decoding (`cache`, or `past_key_values` as transformers before 5.24 named it; `use_cache`) is for
        single-block inputs, as in `generate`.
        `output_hidden_states` (True, or the indices of the hidden states to keep, the others None) and
        `output_attentions` default to the config's; both come per block, `[B, K, ...]`, for a `[B, K, T]` input.
        """
        cache = _the_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() not in (2, 3):
                raise ValueError(
                    f"input_ids must be [batch, tokens] or [batch, blocks, tokens]; got shape {tuple(input_ids.shape)}"
                )
            single_block = input_ids.dim() == 2
            inputs_embeds = self.embed_tokens(input_ids)
        else:
            if inputs_embeds.dim() not in (3, 4) or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be [batch, tokens, {self.config.hidden_size}] or "
                    f"[batch, blocks, tokens, {self.config.hidden_size}]; got shape {tuple(inputs_embeds.shape)}"
                )
            single_block = inputs_embeds.dim() == 3
        if single_block:
            inputs_embeds = inputs_embeds.unsqueeze(1)
        batch, num_blocks, block_len = blocks_shape = tuple(inputs_embeds.shape[:3])
        device = inputs_embeds.device

        position_ids = self._blocks_like(position_ids, "position_ids", blocks_shape, single_block)
        if num_blocks > 1 and cache is not None:
            raise ValueError("a key-value cache (cached decoding) takes a single block [batch, tokens], not several")
        use_cache = (self.config.use_cache if use_cache is None else use_cache) and num_blocks == 1
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_seen = cache.get_seq_length() if cache is not None else 0
        if past_seen + block_len > self.config.max_position_embeddings:  # runs, as Llama does (RoPE scaling may reach)
            logger.warning_once(
                f"A block of {past_seen + block_len} tokens is longer than max_position_embeddings="
                f"{self.config.max_position_embeddings}: positions past it were not trained unless RoPE scaling extends "
                f"them; cut the history into blocks of at most that many tokens"
            )

        # In cached decoding the mask also covers the cached tokens; the block's own tokens are its last T columns.
        attention_mask = self._blocks_like(
            attention_mask, "attention_mask", (batch, num_blocks, past_seen + block_len), single_block
        )
        if attention_mask is None:
            token_mask = torch.ones(blocks_shape, dtype=torch.long, device=device)
        else:
            token_mask = attention_mask[..., past_seen:]

        if author_state is None:
            state = self.author_state.initial_states(batch)
        elif not torch.is_tensor(author_state) or not author_state.is_floating_point():
            raise ValueError(f"author_state must be a float tensor [batch, state_size] (a state a HuLlama returned); "
                             f"got {getattr(author_state, 'dtype', type(author_state).__name__)}")
        elif author_state.shape != (batch, self.config.state_size):
            raise ValueError(
                f"author_state must be [batch={batch}, state_size={self.config.state_size}]; "
                f"got shape {tuple(author_state.shape)}"
            )
        else:
            state = author_state
        completes_blocks = past_seen == 0  # a cached decoding step extends a block, it does not finish one

        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        wants_hidden = output_hidden_states is True or not isinstance(output_hidden_states, (bool, type(None)))
        record = LayerRecord.asked(wants_hidden, bool(output_attentions))
        block_mask = token_mask.bool().any(-1)  # [B, K]
        if completes_blocks and not block_mask.any():
            raise ValueError("attention_mask marks no real token in any block: there is nothing to read")
        ablated = self.author_state.initial_states(batch) if ablate_state else None
        parallel = completes_blocks and cache is None and self.config.extract_layer < self.config.insert_layer
        run = self._run_parallel if parallel else self._run_in_order
        blocks = run(inputs_embeds, attention_mask, token_mask, position_ids, state, block_mask, ablated, cache,
                     use_cache, record, single_block, **kwargs)

        last_hidden_state, hidden_states, attentions = blocks.hidden, blocks.record.hidden, blocks.record.attentions
        if hidden_states is not None and not isinstance(output_hidden_states, bool):
            hidden_states = _keep_selected(hidden_states, output_hidden_states)
        author_states = torch.stack(blocks.states, 1) if completes_blocks else None
        state_abs_mean = None
        if completes_blocks:
            real_blocks = block_mask.to(author_states.dtype)
            state_abs_mean = _row_mean((author_states.detach().abs().mean(-1) * real_blocks).sum(1), real_blocks.sum(1))
        injected_sum, injected_tokens = blocks.injected
        return HuLlamaModelOutput(
            last_hidden_state=last_hidden_state,
            author_states=author_states,
            final_author_state=blocks.states[-1] if completes_blocks else None,
            block_mask=block_mask if completes_blocks else None,
            block_summaries=blocks.summaries if completes_blocks else None,
            **{CACHE_NAME: cache if use_cache else None},
            hidden_states=hidden_states,
            attentions=attentions,
            state_abs_mean=state_abs_mean,
            injection_norm=_row_mean(injected_sum, injected_tokens),
        )

    def _run_in_order(self, inputs_embeds, attention_mask, token_mask, position_ids, state, block_mask, ablated,
                      cache, use_cache, record, single_block, **kwargs) -> "BlocksRun":
        """Block after block, each through every layer (the general case, and cached decoding)."""
        batch, num_blocks = block_mask.shape
        completes_blocks = cache is None or cache.get_seq_length() == 0
        states, summaries, outputs, records = [], [], [], []
        injected_sum = injected_tokens = inputs_embeds.new_zeros(batch, dtype=torch.float32)
        for k in range(num_blocks):
            rows = block_mask[:, k].nonzero().squeeze(-1)
            # All-padding rows are left out of the block: they would attend to nothing, and their state carries.
            # A cache holds every row, so cached decoding (single block, as in generate) runs them all.
            subset = None if len(rows) == batch or cache is not None else rows
            take = (lambda t: t) if subset is None else (lambda t: t.index_select(0, subset))
            whole = (lambda t: t) if subset is None else (lambda t: self._scatter(t, subset, batch))
            positions = position_ids[:, k] if position_ids is not None else None
            hidden, summary, block_record, injected = self._run_block(
                take(inputs_embeds[:, k]),
                take(attention_mask[:, k]) if attention_mask is not None else None,
                take(token_mask[:, k]),
                take(positions) if positions is not None else None,
                take(state if ablated is None else ablated),
                cache,
                use_cache,
                record.empty_like(),
                **kwargs,
            )
            injected_sum, injected_tokens = injected_sum + whole(injected[0]), injected_tokens + whole(injected[1])
            if completes_blocks:
                real = block_mask[:, k]
                if subset is None:  # every row ran (a cache needs them all): padding rows keep their state
                    state = self.author_state.step(state, summary, real, self._detaches_after(k))
                else:  # only the real rows ran: they all advance
                    stepped = self.author_state.step(take(state), summary, take(real), self._detaches_after(k))
                    state = state.index_copy(0, subset, stepped)
                    state = state.detach() if self._detaches_after(k) else state
                summaries.append(whole(summary))
            states.append(state)
            outputs.append(whole(hidden))
            records.append(block_record.map(whole))
        summaries = torch.stack(summaries, 1) if summaries else None
        return BlocksRun(_per_block(outputs, single_block), states, summaries, LayerRecord.stack(records, single_block),
                         (injected_sum, injected_tokens))

    def _prepare(self, embeds, attention_mask, position_ids, cache):
        """Positions (restarting in every block), the causal mask and the rotary embeddings of a batch of blocks."""
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0) + past_seen
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            **{CACHE_NAME: cache},
            position_ids=position_ids,
        )
        return position_ids, causal_mask, self.rotary_emb(embeds, position_ids=position_ids)

    def _run_layers(self, hidden, start, stop, context, token_mask, injection: Injection | None, record, **kwargs):
        """Layers [start, stop) on a batch of blocks; the state's `injection` goes to `insert_layer`'s layer.

        Returns the hidden states and the block summaries (when `extract_layer` is in the range, else None); appends
        each layer's output and attention weights to `record` where it asks for them.
        """
        position_ids, causal_mask, position_embeddings, cache, use_cache = context
        summary = None
        for i in range(start, stop):
            extra = {"injection": injection} if i == self.config.insert_layer else {}
            with record.attention_of(self.layers[i].self_attn):
                hidden = self.layers[i](
                    hidden,
                    attention_mask=causal_mask,
                    position_embeddings=position_embeddings,
                    position_ids=position_ids,
                    **{CACHE_NAME: cache},
                    use_cache=use_cache,
                    **extra,
                    **kwargs,
                )
            if i == self.config.extract_layer:
                summary = _pool_block(hidden, token_mask, self.config.state_pooling)
            if record.hidden is not None:
                record.hidden.append(hidden)
        return hidden, summary

    @staticmethod
    def _injected(injection: Injection, token_mask):
        """Per row `[b]`: (sum over its real tokens of the norm of what the state adds, number of real tokens),
        detached."""
        with torch.no_grad():
            real = token_mask.to(torch.float32)  # [b, T]
            return (injection.token_norms() * real).sum(-1), real.sum(-1)

    def _run_block(self, embeds, attention_mask, token_mask, position_ids, state, cache, use_cache, record, **kwargs):
        """One block of b sequences through every layer, `state` injected at `insert_layer`.

        Returns final hidden [b, T, H], summary [b, H], the record of the layers, and (sum over the real tokens of the
        norm of the injection, number of real tokens), detached. `attention_mask` is the caller's (None, or covering
        cached tokens too); `token_mask` marks the block's real tokens.
        """
        position_ids, causal_mask, position_embeddings = self._prepare(embeds, attention_mask, position_ids, cache)
        context = (position_ids, causal_mask, position_embeddings, cache, use_cache)
        injection = self.author_state.injection(state)
        record.start(embeds)
        hidden, summary = self._run_layers(embeds, 0, len(self.layers), context, token_mask, injection, record, **kwargs)
        hidden = self.norm(hidden)
        record.finish(hidden)
        return hidden, summary, record, self._injected(injection, token_mask)

    def _run_parallel(self, inputs_embeds, attention_mask, token_mask, position_ids, state, block_mask, ablated,
                      cache, use_cache, record, single_block, **kwargs) -> "BlocksRun":
        """All blocks at once, exactly equal to running them in order, when `extract_layer < insert_layer`.

        The layers up to the extraction do not depend on the state, so they run on every real block of every author
        in one batch; the recurrence then runs over the K block summaries (cheap); the remaining layers run in one
        batch again, each block with the state it would have received in order. Every weight is read once per pass
        instead of once per block, which is what makes a quantized base fast.
        """
        batch, num_blocks = block_mask.shape
        rows, hidden, summaries, context, flat_tokens = self._up_to_extraction(
            inputs_embeds, attention_mask, token_mask, position_ids, block_mask, record, **kwargs
        )
        states_before, states = self._recur(state, summaries, block_mask)
        extract = self.config.extract_layer
        entering = ablated.unsqueeze(1).expand(-1, num_blocks, -1) if ablated is not None else torch.stack(states_before, 1)
        injection = self.author_state.injection(entering[rows])
        hidden, _ = self._run_layers(hidden, extract + 1, len(self.layers), context, flat_tokens, injection, record,
                                     **kwargs)
        hidden = self.norm(hidden)
        record.finish(hidden)

        def unflatten(values):
            if single_block and len(rows[0]) == batch:  # already [B, ...] in order: the computed tensor itself
                return values
            blocks = values.new_zeros((batch, num_blocks, *values.shape[1:])).index_put(rows, values)
            return blocks.squeeze(1) if single_block else blocks

        per_block = self._injected(injection, flat_tokens)  # per real block: summed over its author's
        injected = tuple(values.new_zeros(batch).index_add(0, rows[0], values) for values in per_block)
        return BlocksRun(unflatten(hidden), states, summaries, record.map(unflatten).as_tuples(), injected)

    def _up_to_extraction(self, inputs_embeds, attention_mask, token_mask, position_ids, block_mask, record,
                          **kwargs):
        """Layers 0 to `extract_layer` on every real block of every author in one batch (they do not depend on the
        state when the extraction lies below the insertion). Returns the real blocks' (author, block) indices, their
        hidden states, the block summaries `[B, K, H]`, the layers' context and the real blocks' token masks."""
        batch, num_blocks = block_mask.shape
        rows = block_mask.nonzero(as_tuple=True)  # (author, block) of every real block, in order
        embeds = inputs_embeds[rows]
        flat_tokens = token_mask[rows]
        position_ids, causal_mask, position_embeddings = self._prepare(
            embeds, attention_mask[rows] if attention_mask is not None else None,
            position_ids[rows] if position_ids is not None else None, None,
        )
        context = (position_ids, causal_mask, position_embeddings, None, False)
        record.start(embeds)
        extract = self.config.extract_layer
        hidden, summary = self._run_layers(embeds, 0, extract + 1, context, flat_tokens, None, record, **kwargs)
        summaries = summary.new_zeros(batch, num_blocks, summary.shape[-1]).index_put(rows, summary)
        return rows, hidden, summaries, context, flat_tokens

    def _recur(self, state, summaries, block_mask):
        """The recurrence over the K block summaries: (the state entering each block, the state after it)."""
        states_before, states = [], []
        for k in range(block_mask.shape[1]):
            states_before.append(state)
            state = self.author_state.step(state, summaries[:, k], block_mask[:, k], self._detaches_after(k))
            states.append(state)
        return states_before, states

    def _detaches_after(self, k: int) -> bool:
        """Whether backpropagation is cut after block k (`detach_state_every`)."""
        every = self.config.detach_state_every
        return bool(every) and (k + 1) % every == 0

    def encode_authors(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                       author_state: torch.FloatTensor | None = None) -> "HuLlamaModelOutput":
        """The author states of many authors at once: `input_ids` `[B, K, T]` (as `author_inputs` lays them out),
        `author_state` `[B, S]` to continue from stored states. Returns `author_states` `[B, K, S]` (the state after
        each block), `final_author_state` `[B, S]` and `block_mask`, equal to what `forward` returns.

        With the extraction below the insertion (the default layout) the state depends on the layers up to
        `extract_layer` only, so nothing above it runs; with HaRT's layout this is the whole forward."""
        if self.config.extract_layer >= self.config.insert_layer:
            out = self(input_ids, attention_mask=attention_mask, author_state=author_state, use_cache=False)
            return HuLlamaModelOutput(author_states=out.author_states, final_author_state=out.final_author_state,
                                      block_mask=out.block_mask)
        if input_ids.dim() != 3:
            raise ValueError(f"input_ids must be [authors, blocks, tokens]; got shape {tuple(input_ids.shape)}")
        token_mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        if token_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the input's shape {tuple(input_ids.shape)}; got "
                             f"{tuple(token_mask.shape)}")
        block_mask = token_mask.bool().any(-1)
        if not block_mask.any():
            raise ValueError("attention_mask marks no real token in any block: there is nothing to read")
        state = author_state if author_state is not None else self.author_state.initial_states(input_ids.shape[0])
        _, _, summaries, _, _ = self._up_to_extraction(
            self.embed_tokens(input_ids), attention_mask, token_mask, None, block_mask, LayerRecord()
        )
        _, states = self._recur(state, summaries, block_mask)
        return HuLlamaModelOutput(author_states=torch.stack(states, 1), final_author_state=states[-1],
                                  block_mask=block_mask)

    @staticmethod
    def _scatter(values: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
        full = values.new_zeros((batch, *values.shape[1:]))
        return full.index_copy(0, rows, values)

    @staticmethod
    def _blocks_like(tensor, name, blocks_shape, single_block):
        if tensor is None:
            return None
        shaped = tensor.unsqueeze(1) if single_block and tensor.dim() == 2 else tensor
        if tuple(shaped.shape) != blocks_shape:
            expected = (blocks_shape[0], blocks_shape[2]) if single_block else blocks_shape
            raise ValueError(f"{name} must have the input's shape {expected}; got {tuple(tensor.shape)}")
        return shaped


class HuLlamaForCausalLM(HuLlamaPreTrainedModel, GenerationMixin):
    """HuLM: next-token prediction over all blocks of an author, conditioned on the author state."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}  # as Llama's: the head is sharded with the embeddings it ties to

    def __init__(self, config: HuLlamaConfig):
        super().__init__(config)
        self.model = HuLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    @accept_old_cache_name
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        author_state: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        ablate_state: bool = False,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> HuLlamaCausalLMOutput:
        """`labels` has the input's shape, -100 where no token is predicted; shifted inside each block.

        The loss is token cross-entropy summed over all blocks of all authors, divided by the number of
        predicted tokens (or by `num_items_in_batch`, which Trainer passes for exact gradient accumulation).
        `ablate_state=True`: every block reads the learned initial state instead of the carried one (see HuLlamaModel).
        """
        if labels is not None:
            expected = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
            if labels.shape != expected:
                raise ValueError(f"labels must have the input's shape {tuple(expected)}; got {tuple(labels.shape)}")
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_the_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            author_state=author_state,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            ablate_state=ablate_state,
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[..., -logits_to_keep:, :]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return HuLlamaCausalLMOutput(
            loss=loss,
            logits=logits,
            author_states=outputs.author_states,
            final_author_state=outputs.final_author_state,
            block_mask=outputs.block_mask,
            block_summaries=outputs.block_summaries,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            state_abs_mean=outputs.state_abs_mean,
            injection_norm=outputs.injection_norm,
        )


class HuLlamaForSequenceClassification(HuLlamaPreTrainedModel):
    """Message level: labels at the last token of each labelled message of the author's timeline, all in one
    pass (`labels` `[B, K, T]`, -100 elsewhere); a single text `[B, T]` is scored at its last real token like
    Llama's head. Author level (`config.classification_level="author"`): the mean state over real blocks.
    Regression (`num_labels=1`), single-label and multi-label (`labels` with a trailing class axis)."""

    accepts_loss_kwargs = False  # the loss is a mean over labels, not a token sum
    _keep_in_fp32_modules_strict = ["author_state", "score"]

    def __init__(self, config: HuLlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HuLlamaModel(config)
        in_features = config.state_size if config.classification_level == "author" else config.hidden_size
        self.score = nn.Linear(in_features, self.num_labels, bias=False, dtype=torch.float32)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        author_state: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
        ablate_state: bool = False,
        **kwargs,
    ) -> HuLlamaSequenceClassifierOutput:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            author_state=author_state,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            ablate_state=ablate_state,
        )
        dtype = self.score.weight.dtype
        hidden = outputs.last_hidden_state
        pooled_labels = labels
        if self.config.classification_level == "author":
            real = outputs.block_mask.unsqueeze(-1).to(outputs.author_states.dtype)
            mean_state = (outputs.author_states * real).sum(1) / real.sum(1).clamp(min=1)
            logits = pooled_logits = self.score(mean_state.to(dtype))
        elif hidden.dim() == 3:  # one block per row: the last real token, as LlamaForSequenceClassification
            mask = attention_mask if attention_mask is not None else self._non_pad_mask(input_ids, hidden)
            logits = pooled_logits = self.score(_pool_block(hidden, mask, "last").to(dtype))
        else:
            logits = self.score(hidden.to(dtype))  # [B, K, T, C]
            pooled_logits = None
            if labels is not None:
                labelled = self._labelled_positions(labels, hidden.shape[:-1])
                pooled_logits, pooled_labels = logits[labelled], labels[labelled]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=pooled_labels, pooled_logits=pooled_logits, config=self.config)
        return HuLlamaSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            author_states=outputs.author_states,
            final_author_state=outputs.final_author_state,
            block_mask=outputs.block_mask,
            block_summaries=outputs.block_summaries,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            state_abs_mean=outputs.state_abs_mean,
            injection_norm=outputs.injection_norm,
        )

    def _non_pad_mask(self, input_ids, hidden):
        if input_ids is None or self.config.pad_token_id is None:
            return torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return (input_ids != self.config.pad_token_id).long()

    def _labelled_positions(self, labels: torch.Tensor, token_shape) -> torch.Tensor:
        multi_label = labels.dim() == len(token_shape) + 1
        if labels.shape[: len(token_shape)] != token_shape or (multi_label and labels.shape[-1] != self.num_labels):
            raise ValueError(
                f"message-level labels must be [batch, blocks, tokens] = {tuple(token_shape)} (or with a trailing "
                f"axis of num_labels={self.num_labels} for multi-label), -100 where unlabelled; got {tuple(labels.shape)}"
            )
        labelled = labels != -100
        return labelled.all(-1) if multi_label else labelled


HuLlamaModel.register_for_auto_class("AutoModel")
HuLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
HuLlamaForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "author_inputs",
    "stream_blocks",
    "keep_cpu_4bit_weights_unpacked",
    "HuLlamaPreTrainedModel",
    "HuLlamaModel",
    "HuLlamaForCausalLM",
    "HuLlamaForSequenceClassification",
    "HuLlamaModelOutput",
    "HuLlamaCausalLMOutput",
    "HuLlamaSequenceClassifierOutput",
]
