"""HyMoE block: reduces to RecBole's FeedForward, fuses as the paper's equation says."""

import pytest
import torch
from recbole.model.layers import FeedForward

from recbole_hymoe.blocks.hybrid_ffn import HybridFeedForward
from recbole_hymoe.nn.moe import MoESettings


def make_block(num_experts=4, fusion="additive", dropout=0.0):
    return HybridFeedForward(
        hidden_size=8, inner_size=16, hidden_act="gelu", hidden_dropout_prob=dropout, layer_norm_eps=1e-12,
        moe=MoESettings(num_experts, top_k=2) if num_experts else None, expert_inner_size=12, fusion=fusion,
    )


def copy_from_recbole(block):
    recbole_ffn = FeedForward(8, 16, 0.0, "gelu", 1e-12).eval()
    state = {k.replace("LayerNorm", "layer_norm"): v for k, v in recbole_ffn.state_dict().items()}
    block.load_state_dict(state, strict=False)
    return recbole_ffn


def test_without_experts_the_block_is_recbole_feed_forward():
    block = make_block(num_experts=0).eval()
    recbole_ffn = copy_from_recbole(block)
    x = torch.randn(3, 5, 8)
    out, moe_out = block(x, torch.ones(3, 5, dtype=torch.bool))
    assert moe_out is None
    assert torch.allclose(out, recbole_ffn(x), atol=1e-6)


def test_zero_warmup_weight_switches_the_sparse_branch_off():
    block = make_block().eval()
    recbole_ffn = copy_from_recbole(block)
    x = torch.randn(3, 5, 8)
    out, moe_out = block(x, torch.ones(3, 5, dtype=torch.bool), warmup=0.0)
    assert moe_out is not None
    assert torch.allclose(out, recbole_ffn(x), atol=1e-6)


@pytest.mark.parametrize("fusion", ["additive", "convex"])
def test_fusion_follows_its_equation(fusion):
    block = make_block(fusion=fusion).eval()
    with torch.no_grad():
        block.alpha_logit.fill_(0.3)
    x = torch.randn(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    warmup = 0.6
    out, moe_out = block(x, mask, warmup=warmup)
    alpha = torch.sigmoid(torch.tensor(0.3)) * warmup
    dense = block.dense_2(block.act(block.dense_1(x)))
    sparse = moe_out.hidden.reshape(x.shape)  # [N, H] of the real tokens; all are real here
    fused = dense + alpha * sparse if fusion == "additive" else (1 - alpha) * dense + alpha * sparse
    assert torch.allclose(out, block.layer_norm(fused + x), atol=1e-6)


def test_alpha_and_experts_receive_gradient_after_warmup():
    block = make_block()
    x = torch.randn(2, 4, 8)
    out, moe_out = block(x, torch.ones(2, 4, dtype=torch.bool), warmup=1.0)
    (out.pow(2).sum() + moe_out.aux_loss).backward()
    assert block.alpha_logit.grad is not None and block.alpha_logit.grad.abs().item() > 0
    assert block.moe.experts.w_in.grad.abs().sum().item() > 0
    assert block.dense_1.weight.grad.abs().sum().item() > 0


def test_unknown_fusion_is_rejected():
    with pytest.raises(ValueError, match="fusion='sum'"):
        make_block(fusion="sum")


def test_padding_positions_pass_through_and_do_not_change_real_outputs():
    block = make_block().eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    out, moe_out = block(x, mask)
    assert torch.equal(out[~mask], x[~mask])
    assert moe_out.hidden.shape == (4, 8) and moe_out.expert_load.sum().item() == 4 * 2
    wild = x.clone()
    wild[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)
    out_wild, _ = block(wild, mask)
    assert torch.allclose(out_wild[mask], out[mask], atol=1e-6)
