"""HuLlama configuration: a Llama configuration plus the fields of the author state.

Hub code: imports transformers only; at import it only checks that the installed transformers is recent enough.
"""

import transformers
from packaging.version import Version

# The transformers releases this code is tested on: setup.cfg's range (a test keeps the two equal). The upper bound
# is where upstream has announced the removal of the cache's old name (`past_key_values`, deprecated until 5.40).
MIN_TRANSFORMERS_VERSION = "5.23.0"
TRANSFORMERS_RANGE = f">={MIN_TRANSFORMERS_VERSION},<5.40"
if Version(transformers.__version__) < Version(MIN_TRANSFORMERS_VERSION):
    raise ImportError(
        f"HuLlama needs transformers>={MIN_TRANSFORMERS_VERSION}, but transformers {transformers.__version__} is "
        f"installed; upgrade with: pip install --upgrade 'transformers{TRANSFORMERS_RANGE}'"
    )

from huggingface_hub.dataclasses import strict  # noqa: E402  (after the check: older releases lack what follows)
from transformers import LlamaConfig  # noqa: E402

STATE_POOLINGS = ("last", "mean")
CLASSIFICATION_LEVELS = ("message", "author")
STATE_MECHANISMS = ("query", "gate", "memory")

# Written into every saved config so that all four auto classes resolve to the shipped code.
AUTO_MAP = {
    "AutoConfig": "configuration_hullama.HuLlamaConfig",
    "AutoModel": "modeling_hullama.HuLlamaModel",
    "AutoModelForCausalLM": "modeling_hullama.HuLlamaForCausalLM",
    "AutoModelForSequenceClassification": "modeling_hullama.HuLlamaForSequenceClassification",
}


@strict(accept_kwargs=True)
class HuLlamaConfig(LlamaConfig):
    r"""
    A [`LlamaConfig`] whose model reads an author's time-ordered history as blocks and carries an author
    state `U` from block to block (HuLM). Every Llama field keeps its meaning; the HuLlama fields are:

    insert_layer (`int`, *optional*):
        Index of the decoder layer where the author state enters. Defaults to the middle (16 of 32 for
        Llama-3-8B).
    extract_layer (`int`, *optional*):
        Index of the decoder layer whose output is pooled into the block summary that updates the state.
        Defaults to the layer just below `insert_layer` (15 of 32). With the extraction below the insertion, the
        layers up to the extraction do not depend on the state, so all blocks run in one batch; with it above (HaRT's
        layout: insert at 1/6 of the depth, extract at the second-to-last layer) the blocks run one after another.
    state_size (`int`, *optional*):
        Size of the author state. Defaults to `hidden_size`.
    state_pooling (`str`, defaults to `"last"`):
        How a block is summarised: `"last"` real token or `"mean"` over real tokens.
    state_mechanism (`str`, defaults to `"gate"`):
        How the state enters `insert_layer`; each adds exactly nothing at initialisation (Llama parity):
        - `"query"`: a zero-initialised projection of the state added to the pretrained attention query,
          `q = q_proj(x) + W_q U` (W_q = 0).
        - `"gate"`: a tanh-gated residual path (Flamingo-style) into the layer's input,
          `h = h + tanh(alpha) * W_r U` (alpha = 0, a learned scalar; W_r random, std 1/sqrt(state_size)).
        - `"memory"`: the state is projected into `state_memory_tokens` key/value slots (per key-value head)
          that every token of the block reads with the layer's own pretrained query (before rotary positions);
          the per-head read is added through a tanh gate (alpha = 0, one per head) to the attention output
          before `o_proj`: `o_proj(attn(x) + tanh(alpha_h) * softmax(q K_mem^T / sqrt(d)) V_mem)`.
    state_memory_tokens (`int`, defaults to 4):
        Number of memory slots the state is projected into (`state_mechanism="memory"` only).
    normalize_extracted_state (`bool`, defaults to `True`):
        RMS-normalise the block summary before the recurrence, so that Llama's large residual stream does not
        saturate the tanh.
    normalize_injected_state (`bool`, defaults to `False`):
        RMS-normalise the state (learned scale, starting at 1) before it is injected, so that the size of the
        injection does not depend on how saturated U is.
    normalize_state_update (`bool`, defaults to `True`):
        RMS-normalise the recurrence's tanh input (learned scale, starting at 1):
        `U_k = tanh(RMSNorm(W_u U_{k-1} + W_h RMSNorm(h_k)))`, so that growing recurrence weights cannot saturate
        the state. Configurations saved before this field existed computed without it: they need `false`.
    state_init_scale (`float`, defaults to 1.0):
        Initialisation of the recurrence: the weights of `state_to_state` and `summary_to_state` are drawn with
        std `state_init_scale / sqrt(fan_in)` (biases zero). With a normalised summary (RMS 1) each term of the
        tanh input then has std about `state_init_scale * rms(input)`, so with the default 1.0 the tanh input
        is O(1) whatever the width (std between 1 and 1.4), mean |U| about 0.6: not saturated.
    detach_state_every (`int`, defaults to 0):
        Truncated backpropagation through blocks: cut the gradient of the state every k blocks; 0 never cuts.
    block_size (`int`, *optional*):
        Tokens per block of an author's history; at most `max_position_embeddings`. Defaults to
        1024 (HaRT's), or `max_position_embeddings` where that is smaller.
    classification_level (`str`, defaults to `"message"`):
        What `HuLlamaForSequenceClassification` predicts from: `"message"` (the last token of each labelled
        message inside the author's timeline) or `"author"` (the mean author state over real blocks).

    A plain Llama configuration converts without loss: `HuLlamaConfig.from_llama_config(llama_config)`.
    """

    model_type = "hullama"

    insert_layer: int | None = None
    extract_layer: int | None = None
    state_size: int | None = None
    state_pooling: str = "last"
    state_mechanism: str = "gate"
    state_memory_tokens: int = 4
    normalize_extracted_state: bool = True
    normalize_injected_state: bool = False
    normalize_state_update: bool = True
    state_init_scale: float | int = 1.0
    detach_state_every: int = 0
    block_size: int | None = None
    classification_level: str = "message"

    def __post_init__(self, **kwargs):
        # A Llama checkpoint's config.json says model_type "llama": this object is a HuLlama config all the same.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        # Resolve the depth-dependent defaults once, so the saved config states them explicitly.
        if self.insert_layer is None:
            self.insert_layer = self.num_hidden_layers // 2
        if self.extract_layer is None:
            self.extract_layer = max(0, self.insert_layer - 1)
        if self.block_size is None:
            self.block_size = min(1024, self.max_position_embeddings)
        if self.state_size is None:
            self.state_size = self.hidden_size
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)

    def validate_hullama(self):
        """Check the HuLlama fields; each error names the field, its value and the valid range."""
        n = self.num_hidden_layers
        for name in ("insert_layer", "extract_layer"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < n:
                raise ValueError(f"{name}={value!r} is out of range: must be an integer in [0, {n - 1}]")
        if not isinstance(self.state_size, int) or self.state_size < 1:
            raise ValueError(f"state_size={self.state_size!r} is invalid: must be an integer >= 1")
        if isinstance(self.state_memory_tokens, bool) or not isinstance(self.state_memory_tokens, int) \
                or self.state_memory_tokens < 1:
            raise ValueError(
                f"state_memory_tokens={self.state_memory_tokens!r} is invalid: must be an integer >= 1"
            )
        scale = self.state_init_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"state_init_scale={scale!r} is out of range: must be a finite number > 0")
        if not isinstance(self.detach_state_every, int) or self.detach_state_every < 0:
            raise ValueError(
                f"detach_state_every={self.detach_state_every!r} is invalid: must be an integer >= 0 (0: never)"
            )
        if not isinstance(self.block_size, int) or not 2 <= self.block_size <= self.max_position_embeddings:
            raise ValueError(
                f"block_size={self.block_size!r} is out of range: must be an integer in "
                f"[2, max_position_embeddings={self.max_position_embeddings}]"
            )
        for name, allowed in (
            ("state_pooling", STATE_POOLINGS),
            ("state_mechanism", STATE_MECHANISMS),
            ("classification_level", CLASSIFICATION_LEVELS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is invalid: must be one of {', '.join(map(repr, allowed))}")

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        # A Llama checkpoint's config is a HuLlama config with the HuLlama fields at their defaults: reading one is
        # what loading a Llama into HuLlama classes does, not a mismatch for transformers to warn about.
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "llama":
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @classmethod
    def from_llama_config(cls, llama_config: LlamaConfig, **hullama_fields) -> "HuLlamaConfig":
        """Every field of `llama_config` carried over unchanged, plus the given HuLlama fields."""
        fields = llama_config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version"):
            fields.pop(key, None)
        # The attention implementation is set on a config but not serialised: carry it over too.
        fields.setdefault("attn_implementation", getattr(llama_config, "_attn_implementation", None))
        return cls(**{**fields, **hullama_fields})


HuLlamaConfig.register_for_auto_class()  # a saved config copies this file and names it in auto_map

__all__ = ["HuLlamaConfig"]
