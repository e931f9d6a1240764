"""Losses: the HuLM token loss over blocks, exact gradient accumulation, and the classification heads."""

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from conftest import perturb_state_modules, tiny_hullama_config
from modeling_hullama import HuLlamaForCausalLM, HuLlamaForSequenceClassification


def _ids(*shape, seed=0):
    return torch.randint(2, 512, shape, generator=torch.Generator().manual_seed(seed))


def _lm():
    torch.manual_seed(0)
    return perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config()))


def _batch(seed=0):
    ids = _ids(4, 3, 10, seed=seed)
    mask = torch.ones_like(ids)
    mask[0, 2, 4:] = 0
    mask[1, 1:] = 0
    mask[3, 2] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[..., 0] = -100  # a block's first token is never predicted
    return ids, mask, labels


def test_lm_loss_is_token_weighted_cross_entropy_over_blocks():
    model = _lm().eval()
    ids, mask, labels = _batch()
    out = model(ids, attention_mask=mask, labels=labels)
    total, count = 0.0, 0
    for a in range(4):
        for k in range(3):
            for t in range(1, 10):
                if labels[a, k, t] != -100:
                    total += -F.log_softmax(out.logits[a, k, t - 1], -1)[labels[a, k, t]]
                    count += 1
    assert_close(out.loss, total / count)


def _accumulated_grads(model, splits, ids, mask, labels):
    model.zero_grad()
    num_items = (labels[..., 1:] != -100).sum()
    start = 0
    for size in splits:
        part = slice(start, start + size)
        loss = model(ids[part], attention_mask=mask[part], labels=labels[part], num_items_in_batch=num_items).loss
        loss.backward()
        start += size
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_two_accumulation_splits_give_the_same_gradients():
    model = _lm().train()
    ids, mask, labels = _batch()
    whole = _accumulated_grads(model, [4], ids, mask, labels)
    for splits in ([2, 2], [1, 3]):
        split = _accumulated_grads(model, splits, ids, mask, labels)
        for name in whole:
            assert_close(split[name], whole[name], msg=name)
    # and the whole-batch loss with num_items_in_batch equals the plain mean loss
    assert_close(model(ids, attention_mask=mask, labels=labels, num_items_in_batch=(labels[..., 1:] != -100).sum()).loss,
                 model(ids, attention_mask=mask, labels=labels).loss)


def _classifier(**fields):
    torch.manual_seed(0)
    return perturb_state_modules(HuLlamaForSequenceClassification(tiny_hullama_config(**fields))).eval()


def test_message_level_labels_inside_the_timeline():
    model = _classifier(num_labels=3)
    ids = _ids(2, 3, 10)
    labels = torch.full((2, 3, 10), -100)
    labels[0, 0, 4], labels[0, 2, 9], labels[1, 1, 2] = 2, 0, 1
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, 3, 10, 3)
    picked = torch.stack([out.logits[0, 0, 4], out.logits[0, 2, 9], out.logits[1, 1, 2]])
    assert_close(out.loss, F.cross_entropy(picked, torch.tensor([2, 0, 1])))


def test_message_level_regression_and_multi_label():
    ids = _ids(1, 2, 10)
    model = _classifier(num_labels=1)
    labels = torch.full((1, 2, 10), -100.0)
    labels[0, 1, 5] = 0.7
    out = model(ids, labels=labels)
    assert_close(out.loss, (out.logits[0, 1, 5, 0] - 0.7) ** 2)
    model = _classifier(num_labels=2, problem_type="multi_label_classification")
    labels = torch.full((1, 2, 10, 2), -100.0)
    labels[0, 0, 3] = torch.tensor([1.0, 0.0])
    out = model(ids, labels=labels)
    assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits[0, 0, 3], labels[0, 0, 3]))


def test_author_level_head_reads_the_mean_state_over_real_blocks():
    model = _classifier(num_labels=1, classification_level="author")
    ids = _ids(2, 3, 10)
    mask = torch.ones_like(ids)
    mask[1, 2] = 0
    out = model(ids, attention_mask=mask, labels=torch.tensor([0.5, -1.0]))
    means = torch.stack([out.author_states[0].mean(0), out.author_states[1, :2].mean(0)])
    assert_close(out.logits, model.score(means))
    assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, -1.0])))
    assert model.score.in_features == model.config.state_size


def test_single_text_classification_loss_and_backward():
    model = _classifier(num_labels=3).train()
    ids = _ids(3, 10)
    out = model(ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 3)
    out.loss.backward()
    assert model.score.weight.grad.abs().sum() > 0
