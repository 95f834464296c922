"""Chunked full-softmax CE against the plain one; sampled softmax: closed form, both score paths,
masking of accidental positives."""

import functools

import pytest
import torch
from torch.nn import functional as F

from recbole_hymoe.nn import losses
from recbole_hymoe.nn.losses import chunked_cross_entropy, next_item_loss, sampled_softmax_loss


def plain_cross_entropy(user, items, targets, temperature=1.0):
    """The oracle: the [N, |I|] logits in memory, ``F.cross_entropy`` over them."""
    return F.cross_entropy(user @ items.t() / temperature, targets)


def loss_and_grads(loss_fn, user, items, targets, temperature, items_grad):
    """Loss and the gradients w.r.t. fresh leaf copies of ``user`` and (if ``items_grad``) ``items``."""
    user = user.clone().requires_grad_()
    items = items.clone().requires_grad_(items_grad)
    loss = loss_fn(user, items, targets, temperature)
    inputs = (user, items) if items_grad else (user,)
    return loss, torch.autograd.grad(loss, inputs)


# (N, C): empty, one row, exactly one chunk (the plain form), one row over a chunk, whole chunks,
# a ragged last chunk, one row per chunk
CHUNKINGS = [(0, 8), (1, 8), (8, 8), (9, 8), (16, 8), (37, 8), (37, 1)]


@pytest.mark.parametrize("items_grad", [True, False], ids=["items-grad", "items-frozen"])
@pytest.mark.parametrize("temperature", [1.0, 0.07])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_rows,chunk_rows", CHUNKINGS)
def test_chunked_cross_entropy_equals_the_plain_one(num_rows, chunk_rows, dtype, temperature, items_grad):
    user, items = torch.randn(num_rows, 6, dtype=dtype), torch.randn(50, 6, dtype=dtype)
    targets = torch.randint(0, 50, (num_rows,))

    def chunked(*args):
        loss = chunked_cross_entropy(*args, chunk_rows=chunk_rows)
        assert (type(loss.grad_fn).__name__ == "_ChunkedCrossEntropyBackward") == (num_rows > chunk_rows)
        return loss

    loss, grads = loss_and_grads(chunked, user, items, targets, temperature, items_grad)
    expected_loss, expected_grads = loss_and_grads(plain_cross_entropy, user, items, targets, temperature, items_grad)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, expected_loss, equal_nan=True)  # N = 0: NaN, as F.cross_entropy
    for grad, expected in zip(grads, expected_grads):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad, expected)


def test_chunked_cross_entropy_passes_gradcheck():
    user = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    items = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3, 1])
    assert torch.autograd.gradcheck(lambda u, e: chunked_cross_entropy(u, e, targets, 0.5, chunk_rows=2), (user, items))


def saved_bytes(loss_fn):
    """Bytes that autograd keeps for backward while ``loss_fn()`` builds its graph."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn()
    return total


def test_chunked_cross_entropy_saves_the_input_gradients_not_the_logits():
    num_rows, num_items, hidden = 4096, 1000, 8
    user = torch.randn(num_rows, hidden, requires_grad=True)
    items = torch.randn(num_items, hidden, requires_grad=True)
    targets = torch.randint(0, num_items, (num_rows,))
    chunked = saved_bytes(lambda: chunked_cross_entropy(user, items, targets, 0.5, chunk_rows=256))
    # ∂user [N, H] and ∂items [|I|, H] in float32, formed in the forward pass
    assert chunked == 4 * num_rows * hidden + 4 * num_items * hidden
    frozen_items = items.detach()  # only what a gradient is asked for is formed
    assert (saved_bytes(lambda: chunked_cross_entropy(user, frozen_items, targets, 0.5, chunk_rows=256))
            == 4 * num_rows * hidden)
    assert saved_bytes(lambda: plain_cross_entropy(user, items, targets, 0.5)) >= 4 * num_rows * num_items


def test_chunked_cross_entropy_without_gradients_only_scores(monkeypatch):
    user, items, targets = torch.randn(37, 6, requires_grad=True), torch.randn(50, 6), torch.randint(0, 50, (37,))
    expected = plain_cross_entropy(user, items, targets, 0.5)
    products, matmul = [], torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: products.append(1) or matmul(a, b))
    with torch.no_grad():
        loss = chunked_cross_entropy(user, items, targets, 0.5, chunk_rows=8)
    assert loss.grad_fn is None and len(products) == 5  # the logits of 5 chunks of 8 rows, no gradient product
    torch.testing.assert_close(loss, expected)
    products.clear()
    chunked_cross_entropy(user, items, targets, 0.5, chunk_rows=8)
    assert len(products) == 10  # and ∂user per chunk when it is asked for


def test_default_chunk_holds_at_most_chunk_elements_logits(monkeypatch):
    monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", 10 * 50 + 49)  # 10 rows of 50 items, not 11
    items = torch.randn(50, 4)
    for num_rows, backward in [(10, "NllLossBackward0"), (11, "_ChunkedCrossEntropyBackward")]:
        user = torch.randn(num_rows, 4, requires_grad=True)
        loss = chunked_cross_entropy(user, items, torch.randint(0, 50, (num_rows,)))
        assert type(loss.grad_fn).__name__ == backward


def test_chunked_cross_entropy_under_autocast_matches_the_plain_one():
    # The softmax and its log-sum-exp come from the same autocast (bfloat16) logits; were the
    # gradient's softmax taken from float32 logits instead, it would drift by ~5% of its scale.
    user, items = torch.randn(37, 16), torch.randn(50, 16)
    targets = torch.randint(0, 50, (37,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = functools.partial(chunked_cross_entropy, chunk_rows=8)
        loss, grads = loss_and_grads(chunked, user, items, targets, 0.5, True)
        expected_loss, expected_grads = loss_and_grads(plain_cross_entropy, user, items, targets, 0.5, True)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected_loss)
    for grad, expected in zip(grads, expected_grads):
        # bfloat16 rounding (8 bits, ≈ 0.4%); ∂items sums its chunks in float32, the plain form in bfloat16
        torch.testing.assert_close(grad, expected, rtol=0, atol=0.01 * expected.abs().max().item())


def test_next_item_loss_ce_is_the_chunked_cross_entropy(monkeypatch):
    monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", 8 * 50)
    user = torch.randn(37, 6, requires_grad=True)
    items, targets = torch.randn(50, 6), torch.randint(0, 50, (37,))
    loss = next_item_loss(user, items, targets, "CE", temperature=0.5)
    assert type(loss.grad_fn).__name__ == "_ChunkedCrossEntropyBackward"
    torch.testing.assert_close(loss, plain_cross_entropy(user, items, targets, 0.5))


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
