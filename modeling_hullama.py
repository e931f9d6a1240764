"""HuLlama: a Llama that reads an author's history block by block and carries an author state between blocks.

Shapes: B authors, K blocks per author, T tokens per block, H hidden size, S state size.
An author's time-ordered messages are cut into K blocks of T tokens. Positions restart in every block and no
token attends to another block; the only thing that crosses blocks is the author state U (B x S):

    U_0 = learned initial state
    block k reads U_{k-1}: the attention query of `insert_layer` gets a projection of it added
    h_k = output of `extract_layer`, pooled over block k's real tokens (last token or mean)
    U_k = tanh(W_u U_{k-1} + W_h RMSNorm(h_k))      (an all-padding block leaves U unchanged)

The state projection into the query starts at zero, so an untrained HuLlama computes exactly what its Llama
base computes. Hub code: imports torch, transformers and the configuration module only.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.utils import can_return_tuple

try:  # as Hub code, next to the configuration file
    from .configuration_hullama import HuLlamaConfig
except ImportError:  # installed as top-level modules
    from configuration_hullama import HuLlamaConfig


@dataclass
class HuLlamaModelOutput(ModelOutput):
    """
    last_hidden_state: `[B, T, H]` for a single-block input, else `[B, K, T, H]`.
    author_states: `[B, K, S]`, the state after each block (an all-padding block repeats the previous state).
    final_author_state: `[B, S]`, the state after the last block: pass it as `author_state` to continue.
    block_mask: `[B, K]`, True for blocks that hold at least one real token.
    The three state fields are None during cached decoding, where no block is completed.
    """

    last_hidden_state: torch.FloatTensor | None = None
    author_states: torch.FloatTensor | None = None
    final_author_state: torch.FloatTensor | None = None
    block_mask: torch.BoolTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class HuLlamaCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    author_states: torch.FloatTensor | None = None
    final_author_state: torch.FloatTensor | None = None
    block_mask: torch.BoolTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class HuLlamaSequenceClassifierOutput(ModelOutput):
    """logits: `[B, C]` (a single-block input, or author level), else `[B, K, T, C]` at every token."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    author_states: torch.FloatTensor | None = None
    final_author_state: torch.FloatTensor | None = None
    block_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class ZeroInitLinear(nn.Linear):
    """A linear map that starts at exactly zero (see `_init_weights`): a new path that adds nothing until trained.

    It is its own class so that weight initialisation can single it out, also after a trust_remote_code load.
    """


class AuthorState(nn.Module):
    """The new modules: initial state, block-summary normalisation, recurrence and the injection into the query.

    They stay in float32 whatever the base's dtype or quantization, and cast at their borders.
    """

    def __init__(self, config: HuLlamaConfig):
        super().__init__()
        self.initial_state = nn.Parameter(torch.zeros(config.state_size))
        self.summary_norm = (
            LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            if config.normalize_extracted_state
            else nn.Identity()
        )
        self.state_to_state = nn.Linear(config.state_size, config.state_size)
        self.summary_to_state = nn.Linear(config.hidden_size, config.state_size)
        self.state_to_query = ZeroInitLinear(
            config.state_size, config.num_attention_heads * config.head_dim, bias=False
        )

    # Method names avoid those of peft's ModulesToSaveWrapper (update, forward, ...), which wraps this module.
    def initial_states(self, batch_size: int) -> torch.Tensor:
        return self.initial_state.unsqueeze(0).expand(batch_size, -1)

    def advance(self, state: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        dtype = self.state_to_state.weight.dtype
        summary = self.summary_norm(summary.to(dtype))
        return torch.tanh(self.state_to_state(state.to(dtype)) + self.summary_to_state(summary))

    def query_offset(self, state: torch.Tensor) -> torch.Tensor:
        return self.state_to_query(state.to(self.state_to_query.weight.dtype))


class HuLlamaAttention(LlamaAttention):
    """Llama attention whose query may receive a per-sequence offset from the author state.

    Same parameters as LlamaAttention (a Llama checkpoint loads as is); with no offset it computes the same.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        state_query_offset: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query = self.q_proj(hidden_states)
        if state_query_offset is not None:  # [B, heads * head_dim], the same for every token of the block
            query = query + state_query_offset.to(query.dtype).unsqueeze(1)
        query_states = query.view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if past_key_values is not None:
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class HuLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = HuLlamaConfig
    config: HuLlamaConfig
    # The new modules are small and must not lose precision: never quantized, float32 under fp16 and bf16.
    # bitsandbytes matches these from the start of a module name or as its suffix, hence both spellings.
    _keep_in_fp32_modules = ["author_state", "model.author_state", "score"]
    _keep_in_fp32_modules_strict = ["author_state", "model.author_state", "score"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ZeroInitLinear):
            init.zeros_(module.weight)
        elif isinstance(module, AuthorState):
            init.zeros_(module.initial_state)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        keep_cpu_4bit_weights_unpacked(model)
        # Modules missing from the checkpoint (all of them, from a Llama one) are created in the load dtype.
        for name, module in model.named_modules():
            if name.split(".")[-1] in ("author_state", "score"):
                module.float()
        return model

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        # Reentrant checkpointing gives no gradient to keyword tensors, and the state offset is one.
        checkpoint_kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if checkpoint_kwargs["use_reentrant"]:
            raise ValueError("HuLlama needs non-reentrant activation checkpointing (use_reentrant=False)")
        super().activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs, **kwargs)


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
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layers[config.insert_layer].self_attn = HuLlamaAttention(config, config.insert_layer)
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.author_state = AuthorState(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        author_state: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> HuLlamaModelOutput:
        """Input `[B, T]` (one block) or `[B, K, T]` (K blocks in time order; the same for masks and positions).

        `author_state` `[B, S]` is the state before the first block (default: the learned initial state).
        Cached decoding (`past_key_values`, `use_cache`) is for single-block inputs, as in `generate`.
        """
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
        if num_blocks > 1 and past_key_values is not None:
            raise ValueError("past_key_values (cached decoding) takes a single block [batch, tokens], not several")
        use_cache = (self.config.use_cache if use_cache is None else use_cache) and num_blocks == 1
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_seen + block_len > self.config.max_position_embeddings:
            raise ValueError(
                f"A block of {past_seen + block_len} tokens is longer than max_position_embeddings="
                f"{self.config.max_position_embeddings}; cut the history into blocks of at most that many tokens"
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
        elif author_state.shape != (batch, self.config.state_size):
            raise ValueError(
                f"author_state must be [batch={batch}, state_size={self.config.state_size}]; "
                f"got shape {tuple(author_state.shape)}"
            )
        else:
            state = author_state
        completes_blocks = past_seen == 0  # a cached decoding step extends a block, it does not finish one

        block_mask = token_mask.bool().any(-1)  # [B, K]
        states, outputs, all_hidden = [], [], []
        for k in range(num_blocks):
            rows = block_mask[:, k].nonzero().squeeze(-1)
            # All-padding rows are left out of the block: they would attend to nothing, and their state carries.
            # A cache holds every row, so cached decoding (single block, as in generate) runs them all.
            subset = None if len(rows) == batch or past_key_values is not None else rows
            take = (lambda t: t) if subset is None else (lambda t: t.index_select(0, subset))
            positions = position_ids[:, k] if position_ids is not None else None
            hidden, summary, layer_states = self._run_block(
                take(inputs_embeds[:, k]),
                take(attention_mask[:, k]) if attention_mask is not None else None,
                take(token_mask[:, k]),
                take(positions) if positions is not None else None,
                take(state),
                past_key_values,
                use_cache,
                output_hidden_states,
                **kwargs,
            )
            if completes_blocks:
                new_state = self.author_state.advance(take(state), summary).to(state.dtype)
                state = new_state if subset is None else state.index_copy(0, subset, new_state)
                every = self.config.detach_state_every
                if every and (k + 1) % every == 0:
                    state = state.detach()
            states.append(state)
            outputs.append(hidden if subset is None else self._scatter(hidden, subset, batch))
            if output_hidden_states:
                all_hidden.append([h if subset is None else self._scatter(h, subset, batch) for h in layer_states])

        last_hidden_state = torch.stack(outputs, 1)
        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(torch.stack(per_layer, 1) for per_layer in zip(*all_hidden))
        if single_block:
            last_hidden_state = last_hidden_state.squeeze(1)
            hidden_states = tuple(h.squeeze(1) for h in hidden_states) if hidden_states else None
        return HuLlamaModelOutput(
            last_hidden_state=last_hidden_state,
            author_states=torch.stack(states, 1) if completes_blocks else None,
            final_author_state=state if completes_blocks else None,
            block_mask=block_mask if completes_blocks else None,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=hidden_states,
        )

    def _run_block(
        self, embeds, attention_mask, token_mask, position_ids, state, past_key_values, use_cache, output_hidden_states, **kwargs
    ):
        """One block of b sequences through every layer; returns final hidden [b, T, H], summary [b, H], layer outputs.

        `attention_mask` is the caller's (None, or covering cached tokens too); `token_mask` marks the block's real tokens.
        """
        if position_ids is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0) + past_seen
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(embeds, position_ids=position_ids)
        offset = self.author_state.query_offset(state)
        hidden, summary, layer_states = embeds, None, [embeds] if output_hidden_states else []
        for i, layer in enumerate(self.layers):
            extra = {"state_query_offset": offset} if i == self.config.insert_layer else {}
            hidden = layer(
                hidden,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                **extra,
                **kwargs,
            )
            if i == self.config.extract_layer:
                summary = _pool_block(hidden, token_mask, self.config.state_pooling)
            if output_hidden_states:
                layer_states.append(hidden)
        hidden = self.norm(hidden)
        if output_hidden_states:
            layer_states[-1] = hidden  # as Llama: the last entry is after the final norm
        return hidden, summary, layer_states

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

    def __init__(self, config: HuLlamaConfig):
        super().__init__(config)
        self.model = HuLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        author_state: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> HuLlamaCausalLMOutput:
        """`labels` has the input's shape, -100 where no token is predicted; shifted inside each block.

        The loss is token cross-entropy summed over all blocks of all authors, divided by the number of
        predicted tokens (or by `num_items_in_batch`, which Trainer passes for exact gradient accumulation).
        """
        if labels is not None:
            expected = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
            if labels.shape != expected:
                raise ValueError(f"labels must have the input's shape {tuple(expected)}; got {tuple(labels.shape)}")
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            author_state=author_state,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
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
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
        )


class HuLlamaForSequenceClassification(HuLlamaPreTrainedModel):
    """Message level: labels at the last token of each labelled message of the author's timeline, all in one
    pass (`labels` `[B, K, T]`, -100 elsewhere); a single text `[B, T]` is scored at its last real token like
    Llama's head. Author level (`config.classification_level="author"`): the mean state over real blocks.
    Regression (`num_labels=1`), single-label and multi-label (`labels` with a trailing class axis)."""

    accepts_loss_kwargs = False  # the loss is a mean over labels, not a token sum

    def __init__(self, config: HuLlamaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HuLlamaModel(config)
        in_features = config.state_size if config.classification_level == "author" else config.hidden_size
        self.score = nn.Linear(in_features, self.num_labels, bias=False)
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
        output_hidden_states: bool | None = None,
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
            hidden_states=outputs.hidden_states,
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


HuLlamaConfig.register_for_auto_class()
HuLlamaModel.register_for_auto_class("AutoModel")
HuLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")
HuLlamaForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "keep_cpu_4bit_weights_unpacked",
    "HuLlamaPreTrainedModel",
    "HuLlamaModel",
    "HuLlamaForCausalLM",
    "HuLlamaForSequenceClassification",
    "HuLlamaModelOutput",
    "HuLlamaCausalLMOutput",
    "HuLlamaSequenceClassifierOutput",
]
