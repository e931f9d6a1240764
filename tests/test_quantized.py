"""4-bit loading on CPU (bitsandbytes 0.50): the base quantized, the new modules float32 and trainable,
and bitsandbytes' AVX512-BF16 repacking kept off so that saving after an eval forward corrupts nothing."""

import pytest
import torch
from torch.testing import assert_close

from conftest import tiny_hullama_config

pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")
from bitsandbytes.nn import Linear4bit  # noqa: E402
from transformers import BitsAndBytesConfig  # noqa: E402

from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification  # noqa: E402


def _nf4(compute_dtype=torch.float32):
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


@pytest.fixture(scope="module")
def hullama_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hullama")
    HuLlamaForCausalLM(tiny_hullama_config()).save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nf4_base_with_float32_state_modules(hullama_dir, dtype):
    model = HuLlamaForCausalLM.from_pretrained(hullama_dir, quantization_config=_nf4(dtype), dtype=dtype)
    assert isinstance(model.model.layers[0].self_attn.q_proj, Linear4bit)
    for name, param in model.model.author_state.named_parameters():
        assert param.dtype == torch.float32, name
    assert not any(isinstance(m, Linear4bit) for m in model.model.author_state.modules())
    quantized = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert quantized and all(m.support_avx512bf16_for_cpu is False for m in quantized)

    ids = torch.randint(2, 512, (2, 3, 12))
    out = model(ids, labels=ids)
    assert torch.isfinite(out.loss) and out.final_author_state.dtype == torch.float32
    out.loss.backward()
    assert model.model.author_state.residual_gate.alpha.grad.abs().sum() > 0  # the default gate's path opens


def test_classifier_head_stays_float32_under_4bit(hullama_dir):
    model = HuLlamaForSequenceClassification.from_pretrained(hullama_dir, num_labels=3,
                                                             quantization_config=_nf4(torch.bfloat16),
                                                             dtype=torch.bfloat16)
    assert model.score.weight.dtype == torch.float32
    logits = model(torch.randint(2, 512, (2, 10))).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_adapter_save_after_eval_forward_leaves_logits_unchanged(hullama_dir, tmp_path):
    model = HuLlamaForCausalLM.from_pretrained(hullama_dir, quantization_config=_nf4())
    lora = peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                           modules_to_save=["author_state"])
    model = peft.get_peft_model(model, lora).eval()
    ids = torch.randint(2, 512, (2, 2, 12))
    with torch.no_grad():
        untrained = model(input_ids=ids).logits
        for name, param in model.named_parameters():  # as training would change the trainable copies
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)
        before = model(input_ids=ids).logits
        assert not torch.allclose(before, untrained)
        model.save_pretrained(tmp_path / "adapter")
        after = model(input_ids=ids).logits
    assert_close(after, before, rtol=0, atol=0)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = HuLlamaForCausalLM.from_pretrained(hullama_dir, quantization_config=_nf4())
    reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert_close(reloaded(input_ids=ids).logits, before)
