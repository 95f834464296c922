"""The package's one MoE layer: router, dispatch, balance and z losses, padding, gradients."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recbole_hymoe.nn.moe import (
    Experts,
    ExpertUsage,
    LinearExperts,
    SparseMoE,
    TopKRouter,
    entropy_balance_loss,
    router_z_loss,
    switch_balance_loss,
)

HAND_PROBS = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])


def make_moe(num_experts=4, top_k=2, hidden=8, inner=16, **kwargs):
    moe = SparseMoE(Experts(num_experts, hidden, inner), top_k, **kwargs)
    for p in moe.parameters():  # N(0, 1) so every expert's output is clearly non-zero
        torch.nn.init.normal_(p)
    return moe


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_router_topk_matches_softmax_topk(top_k):
    router = TopKRouter(8, 5, top_k)
    x = torch.randn(37, 8)
    out = router(x)
    probs = torch.softmax(router.proj(x).float(), dim=-1)
    assert torch.allclose(out.probs, probs)
    assert torch.equal(out.topk_idx, probs.topk(top_k, dim=-1).indices)
    assert all(len(set(row.tolist())) == top_k for row in out.topk_idx)
    assert (out.topk_weight >= 0).all()
    assert torch.allclose(out.topk_weight.sum(-1), torch.ones(37))
    expected = probs.gather(1, out.topk_idx)
    assert torch.allclose(out.topk_weight, expected / expected.sum(-1, keepdim=True))


def test_router_rejects_bad_top_k():
    with pytest.raises(ValueError, match="top_k=5"):
        TopKRouter(8, 4, 5)
    with pytest.raises(ValueError, match="top_k=0"):
        TopKRouter(8, 4, 0)


def test_moe_with_k_equal_e_is_the_dense_softmax_mixture():
    moe = make_moe(num_experts=3, top_k=3)
    x = torch.randn(10, 8)
    out = moe(x).hidden
    probs = torch.softmax(moe.router.proj(x), dim=-1)
    dense = sum(probs[:, e : e + 1] * moe.experts.expert_forward(e, x) for e in range(3))
    assert torch.allclose(out, dense, atol=1e-5)


def test_switch_balance_loss_hand_example():
    # f = (0.75, 0.25), P = (0.65, 0.35): 2 * (0.75*0.65 + 0.25*0.35) = 1.15
    top1 = HAND_PROBS.argmax(-1, keepdim=True)
    assert switch_balance_loss(HAND_PROBS, top1).item() == pytest.approx(1.15, abs=1e-6)
    # masking the 4th token: f = (2/3, 1/3), P = (2/3, 1/3): 2 * 5/9 = 10/9
    mask = torch.tensor([True, True, True, False])
    assert switch_balance_loss(HAND_PROBS, top1, mask).item() == pytest.approx(10 / 9, abs=1e-6)


def test_entropy_balance_loss_hand_example():
    # ḡ = (0.65, 0.35): 0.65 ln 0.65 + 0.35 ln 0.35 + ln 2 = 0.0457006
    assert entropy_balance_loss(HAND_PROBS).item() == pytest.approx(0.0457006, abs=1e-6)
    # 4th token masked: ḡ = (2/3, 1/3): 0.0566330
    mask = torch.tensor([True, True, True, False])
    assert entropy_balance_loss(HAND_PROBS, mask).item() == pytest.approx(0.0566330, abs=1e-6)


def test_entropy_balance_loss_is_zero_at_uniform_usage_and_ignores_padding():
    uniform = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]])
    assert entropy_balance_loss(uniform).item() == pytest.approx(0.0, abs=1e-7)
    padded = torch.cat([uniform, torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)])
    mask = torch.tensor([True] * 4 + [False] * 3)
    assert entropy_balance_loss(padded, mask).item() == pytest.approx(0.0, abs=1e-7)
    assert entropy_balance_loss(padded).item() > 0.1


def test_z_loss_of_zero_logits_is_log_e_squared():
    assert router_z_loss(torch.zeros(5, 4)).item() == pytest.approx(math.log(4) ** 2, abs=1e-6)
    assert router_z_loss(torch.zeros(5, 4)).item() == pytest.approx(1.9218, abs=1e-4)


def test_losses_are_zero_without_real_tokens():
    empty = torch.zeros(0, 4)
    assert entropy_balance_loss(empty).item() == 0.0
    assert switch_balance_loss(empty, torch.zeros(0, 1, dtype=torch.long)).item() == 0.0
    assert router_z_loss(empty).item() == 0.0


@pytest.mark.parametrize("balance_loss", ["entropy", "switch"])
def test_padding_changes_nothing(balance_loss):
    moe = make_moe(balance_loss=balance_loss, z_loss_weight=0.1)
    real = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    out = moe(real, mask)
    padded = torch.cat([real, 100 * torch.randn(2, 3, 8)], dim=1)  # wild values where padded
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    out_padded = moe(padded, padded_mask)
    assert torch.allclose(out_padded.hidden[:, :5], out.hidden, atol=1e-6)
    assert torch.equal(out_padded.hidden[:, 5:], torch.zeros(2, 3, 8))
    for field in ("aux_loss", "balance_loss", "z_loss"):
        assert getattr(out_padded, field).item() == pytest.approx(getattr(out, field).item(), rel=1e-6)
    assert torch.equal(out_padded.expert_load, out.expert_load)


def test_only_the_selected_experts_run_and_only_on_real_tokens():
    hidden_size, inner, num_experts, top_k = 8, 16, 4, 2
    moe = make_moe(num_experts, top_k, hidden_size, inner)
    hidden = torch.randn(3, 7, hidden_size)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, :7], mask[1, :4], mask[2, :2] = True, True, True  # 13 real tokens of 21
    with FlopCounterMode(display=False) as counter:
        moe(hidden, mask)
    real = int(mask.sum())
    router = 2 * real * hidden_size * num_experts  # Linear(H, E) on the real tokens
    experts = real * top_k * (2 * hidden_size * inner + 2 * inner * hidden_size)  # K MLPs per token
    assert counter.get_total_flops() == router + experts


def test_expert_load_counts_real_token_slots():
    moe = make_moe(num_experts=4, top_k=2)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    out = moe(torch.randn(2, 4, 8), mask)
    assert out.expert_load.sum().item() == 4 * 2
    assert out.router.topk_idx.shape == (4, 2)


def test_eval_mode_is_deterministic():
    moe = make_moe().eval()
    x = torch.randn(3, 6, 8)
    assert torch.equal(moe(x).hidden, moe(x).hidden)


def test_gradient_reaches_selected_experts_and_router_only():
    moe = make_moe(num_experts=4, top_k=2, balance_weight=0.0)
    with torch.no_grad():
        moe.router.proj.bias[3] = -100.0  # expert 3 is never among the top 2
    x = torch.randn(6, 8)
    with torch.no_grad():
        selected = set(moe.router(x).topk_idx.reshape(-1).tolist())
    assert 3 not in selected and len(selected) >= 2
    moe(x).hidden.pow(2).sum().backward()
    for e in range(4):
        grad = moe.experts.w_in.grad[e].abs().sum().item() + moe.experts.w_out.grad[e].abs().sum().item()
        if e in selected:
            assert grad > 0
        else:
            assert grad == 0
    assert moe.router.proj.weight.grad.abs().sum().item() > 0


def test_top1_router_learns_from_balance_loss_only():
    moe = make_moe(num_experts=4, top_k=1, balance_weight=0.0)
    x = torch.randn(16, 8)
    moe(x).hidden.pow(2).sum().backward()
    grad = moe.router.proj.weight.grad  # renormalised top-1 gate is 1: no task gradient at all
    assert grad is None or grad.abs().max().item() == 0.0
    moe.zero_grad()
    moe.balance_weight = 1.0
    moe(x).aux_loss.backward()
    assert moe.router.proj.weight.grad.abs().max().item() > 0.0


@pytest.mark.parametrize("kind", ["mlp", "swiglu", "linear"])
@pytest.mark.parametrize("num_experts,top_k", [(1, 1), (4, 1), (4, 2)])
@pytest.mark.parametrize("num_tokens", [0, 1, 37])
def test_fast_dispatch_equals_reference_loop(kind, num_experts, top_k, num_tokens):
    if kind == "linear":
        experts = LinearExperts(num_experts, 8, 5)
    else:
        experts = Experts(num_experts, 8, 16, activation="swish" if kind == "swiglu" else "gelu",
                          gated=kind == "swiglu")
    for p in experts.parameters():
        torch.nn.init.normal_(p)
    router = TopKRouter(8, num_experts, top_k)
    x = torch.randn(num_tokens, 8, requires_grad=True)
    routing = router(x)
    grad_out = torch.randn(num_tokens, experts.out_features)

    fast = experts(x, routing.topk_idx, routing.topk_weight)
    if num_tokens == 0:
        assert fast.shape == (0, experts.out_features)
        assert experts.reference_forward(x, routing.topk_idx, routing.topk_weight).shape == (0, experts.out_features)
        return
    fast_grads = torch.autograd.grad((fast * grad_out).sum(), [x, *experts.parameters(), *router.parameters()],
                                     allow_unused=True)
    routing = router(x)
    slow = experts.reference_forward(x, routing.topk_idx, routing.topk_weight)
    slow_grads = torch.autograd.grad((slow * grad_out).sum(), [x, *experts.parameters(), *router.parameters()],
                                     allow_unused=True)
    assert torch.allclose(fast, slow, atol=1e-5)
    for g_fast, g_slow in zip(fast_grads, slow_grads):
        if g_fast is None or g_slow is None:
            assert (g_fast is None or not g_fast.any()) and (g_slow is None or not g_slow.any())
        else:
            assert torch.allclose(g_fast, g_slow, atol=1e-4)


def test_usage_statistics_summarise_share_gate_and_entropy():
    usage = ExpertUsage(num_experts=2, top_k=1)
    router = TopKRouter(2, 2, 1)
    routing = router(torch.randn(10, 2))
    usage.update(routing)
    stats = usage.summary()
    assert stats["tokens"] == 10
    assert sum(stats["token_share"]) == pytest.approx(1.0)
    assert stats["mean_gate"] == pytest.approx(routing.probs.mean(0).tolist(), abs=1e-6)
    share = torch.tensor(stats["token_share"])
    assert stats["usage_entropy"] == pytest.approx(float(-(share * share.clamp_min(1e-12).log()).sum()), abs=1e-6)
    usage.reset()
    assert usage.summary()["tokens"] == 0
