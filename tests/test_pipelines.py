"""A saved HuLlama works in transformers' own pipelines (a plain text is one block from the initial state)."""

import torch
from transformers import pipeline

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification


def test_text_generation_and_classification_pipelines(tmp_path, tokenizer):
    torch.manual_seed(0)
    lm = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(vocab_size=len(tokenizer))))
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    generator = pipeline("text-generation", model=str(tmp_path / "lm"), trust_remote_code=True)
    text = generator("the author writes", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("the author writes") and len(text) > len("the author writes")

    config = tiny_hullama_config(vocab_size=len(tokenizer), num_labels=3, pad_token_id=tokenizer.pad_token_id,
                                 id2label={0: "against", 1: "none", 2: "favor"},
                                 label2id={"against": 0, "none": 1, "favor": 2})
    classifier = HuLlamaForSequenceClassification(config)
    classifier.save_pretrained(tmp_path / "cls")
    tokenizer.save_pretrained(tmp_path / "cls")
    scores = pipeline("text-classification", model=str(tmp_path / "cls"), trust_remote_code=True)(
        ["I love it", "bad code today and more words"], top_k=None)
    assert [sorted(s["label"] for s in row) for row in scores] == [["against", "favor", "none"]] * 2
    expected = classifier.eval()(**tokenizer(["I love it"], return_tensors="pt")).logits.softmax(-1)[0]
    got = {s["label"]: s["score"] for s in scores[0]}
    torch.testing.assert_close(torch.tensor([got["against"], got["none"], got["favor"]]), expected)


def test_pipelines_batch_several_texts(tmp_path, tokenizer):
    """batch_size > 1: a pipeline splits every output per example (the per-row diagnostics too)."""
    torch.manual_seed(0)
    config = tiny_hullama_config(vocab_size=len(tokenizer), num_labels=2, pad_token_id=tokenizer.pad_token_id)
    HuLlamaForSequenceClassification(config).save_pretrained(tmp_path / "cls")
    lm = perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(vocab_size=len(tokenizer),
                                                                      pad_token_id=tokenizer.pad_token_id)))
    lm.save_pretrained(tmp_path / "lm")
    for folder in ("cls", "lm"):
        tokenizer.save_pretrained(tmp_path / folder)
    texts = ["I love it", "bad code today and more words", "the author writes about data", "we fix a bug"]

    classify = pipeline("text-classification", model=str(tmp_path / "cls"), trust_remote_code=True)
    assert classify(texts, batch_size=2) == classify(texts, batch_size=1)

    tokenizer.padding_side = "left"
    generate = pipeline("text-generation", model=str(tmp_path / "lm"), tokenizer=tokenizer, trust_remote_code=True)
    batched = generate(texts, batch_size=2, max_new_tokens=4, do_sample=False)
    one_by_one = generate(texts, batch_size=1, max_new_tokens=4, do_sample=False)
    assert batched == one_by_one

    features = pipeline("feature-extraction", model=str(tmp_path / "lm"), tokenizer=tokenizer, trust_remote_code=True)
    for batch_row, alone in zip(features(texts, batch_size=2), features(texts, batch_size=1)):
        torch.testing.assert_close(torch.tensor(batch_row[0][-1]), torch.tensor(alone[0][-1]), rtol=1e-4, atol=1e-5)
