"""Sampled softmax: closed form, both score paths, masking of accidental positives."""

import pytest
import torch
from torch.nn import functional as F

from recbole_hymoe.nn.losses import sampled_softmax_loss


def manual(user, items, positives, negatives, temperature):
    pos = (user * items[positives]).sum(-1, keepdim=True)
    neg = torch.einsum("nh,nrh->nr", user, items[negatives])
    neg = neg.masked_fill(negatives == positives[:, None], float("-inf"))
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(user), dtype=torch.long))


@pytest.mark.parametrize("hidden,num_items", [(4, 30), (4, 500)], ids=["full-logits", "gather"])
def test_sampled_softmax_matches_its_definition(hidden, num_items):
    user, items = torch.randn(7, hidden), torch.randn(num_items, hidden)
    positives = torch.randint(1, num_items, (7,))
    generator = torch.Generator().manual_seed(3)
    loss = sampled_softmax_loss(user, items, positives, 5, 0.5, generator=generator)
    negatives = torch.randint(1, num_items, (7, 5), generator=torch.Generator().manual_seed(3))
    assert loss.item() == pytest.approx(manual(user, items, positives, negatives, 0.5).item(), rel=1e-5)


def test_a_negative_equal_to_the_positive_is_masked():
    items, user = torch.randn(3, 4), torch.randn(2, 4)
    positives = torch.tensor([1, 2])
    negatives = torch.ones(2, 3, dtype=torch.long)  # item 1 three times: row 0's own positive
    loss = sampled_softmax_loss(user, items, positives, 3, negatives=negatives)
    # row 0: every negative is masked, the softmax holds the positive alone -> loss 0
    row1 = torch.cat([(user[1] @ items[2]).view(1), (user[1] @ items[1]).repeat(3)])
    expected_row1 = F.cross_entropy(row1[None], torch.zeros(1, dtype=torch.long))
    assert loss.item() == pytest.approx(expected_row1.item() / 2, rel=1e-5)


def test_sampled_softmax_gradients_reach_user_and_items():
    user = torch.randn(5, 4, requires_grad=True)
    items = torch.randn(50, 4, requires_grad=True)
    sampled_softmax_loss(user, items, torch.randint(1, 50, (5,)), 8, 0.05).backward()
    assert user.grad.abs().sum() > 0 and items.grad.abs().sum() > 0
    assert items.grad[0].abs().sum() == 0  # padding row never sampled
