"""HyMoE block: a dense shared expert plus a warm-up-gated sparse MoE, in place of the PFFN.

Reference: Li, Sun, Lim, "HyMoERec: Hybrid Mixture-of-Experts for Sequential Recommendation",
AAAI 2026 student abstract, arXiv 2511.06388. No official code exists.

NOTE: the paper gives the fusion ``y = y_dense + α · y_MoE`` with ``α = σ(a) · w(t)``; the
residual, LayerNorm and dropout around it are our reading (the host FFN's post-LN layout kept
as it is, so with α = 0 the block is the host's FFN), as is the ``convex`` fusion ablation.
"""

import torch
from torch import nn

from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.ffn import get_activation
from recbole_hymoe.nn.moe import Experts, SparseMoE

FUSIONS = ("additive", "convex")


class HybridFeedForward(nn.Module):
    """``LayerNorm(x + Dropout(fuse(y_dense, y_MoE, α)))`` with ``α = σ(a) · w(t)``.

    ``y_dense = W_2 Dropout_inner(act(W_1 x + b_1)) + b_2`` is the shared expert every token passes
    through (RecBole's ``FeedForward`` inner MLP, same parameter names; Mamba4Rec's FFN adds the
    inner dropout, RecBole's has none); ``y_MoE`` is the package's
    :class:`~recbole_hymoe.nn.moe.SparseMoE`. Fusion ``additive``: ``y_dense + α · y_MoE``
    (paper); ``convex``: ``(1 - α) · y_dense + α · y_MoE``. With ``num_experts = 0`` the block
    is exactly RecBole's ``FeedForward``.

    Args:
        hidden_size (int): H.
        inner_size (int): inner size of the dense branch.
        hidden_act (str): activation of every MLP.
        hidden_dropout_prob (float): dropout on the fused output.
        layer_norm_eps (float): LayerNorm epsilon.
        num_experts (int): E ≥ 0; 0 = no sparse branch.
        top_k (int): K.
        expert_inner_size (int): inner size of each expert.
        router (str): router kind.
        fusion (str): one of :data:`FUSIONS`.
        alpha_init (float): initial learnable logit ``a`` (σ(0) = 0.5).
        balance_loss (str): ``entropy`` or ``switch``.
        balance_weight (float): λ_lb.
        z_loss_weight (float): router z-loss weight.
        inner_dropout_prob (float): dropout after the activation inside the dense branch and
            every expert (0 for the transformer host, the host's dropout for Mamba4Rec's FFN).
        dense (bool): keep the dense shared branch; without it the block is a plain MoE-FFN
            ``LN(x + Dropout(y_MoE))`` (HM2Rec's), which needs ``num_experts > 0``.
    """

    def __init__(
        self,
        hidden_size,
        inner_size,
        hidden_act,
        hidden_dropout_prob,
        layer_norm_eps,
        num_experts,
        top_k,
        expert_inner_size,
        router="linear",
        fusion="additive",
        alpha_init=0.0,
        balance_loss="entropy",
        balance_weight=0.01,
        z_loss_weight=0.0,
        inner_dropout_prob=0.0,
        dense=True,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is not one of {FUSIONS}")
        if not dense and num_experts == 0:
            raise ValueError("a block without its dense branch needs experts (num_experts > 0)")
        self.fusion = fusion
        self.dense = dense
        if dense:
            self.dense_1 = nn.Linear(hidden_size, inner_size)
            self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.act = get_activation(hidden_act)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout_prob)
        self.inner_dropout = Dropout(inner_dropout_prob)
        self.moe = None
        if num_experts > 0:
            self.moe = SparseMoE(
                Experts(num_experts, hidden_size, expert_inner_size, activation=hidden_act,
                        dropout_prob=inner_dropout_prob),
                top_k,
                router=router,
                balance_loss=balance_loss,
                balance_weight=balance_weight,
                z_loss_weight=z_loss_weight,
            )
            if dense:
                self.alpha_logit = nn.Parameter(torch.tensor(float(alpha_init)))

    def alpha(self, warmup):
        """Return ``α = σ(a) · w(t)`` (0 without a sparse branch, 1 without a dense one)."""
        if self.moe is None:
            return torch.zeros(())
        if not self.dense:
            return torch.ones(())
        return torch.sigmoid(self.alpha_logit) * warmup

    def forward(self, hidden, mask, warmup=1.0):
        """Apply the block to the real tokens; padding positions pass through unchanged.

        Only real tokens are computed (dense branch and experts alike): padding states are never
        read downstream (masked as attention keys, never gathered), so skipping them changes no
        real output and saves the padded share of the FFN work.

        Args:
            hidden (FloatTensor): [B, L, H].
            mask (BoolTensor): [B, L], True for real tokens.
            warmup (float or FloatTensor): w(t) ∈ [0, 1].

        Returns:
            tuple: output [B, L, H] and the :class:`~recbole_hymoe.nn.moe.MoEOutput` of the N
            real tokens (None without a sparse branch).
        """
        flat = hidden.reshape(-1, hidden.size(-1))  # [B·L, H]
        token_idx = mask.reshape(-1).nonzero(as_tuple=True)[0]  # [N]
        tokens = flat.index_select(0, token_idx)  # [N, H]
        moe_out = self.moe(tokens) if self.moe is not None else None
        if not self.dense:
            y = moe_out.hidden
        else:
            y = self.dense_2(self.inner_dropout(self.act(self.dense_1(tokens))))
            if moe_out is not None:
                alpha = self.alpha(warmup)
                if self.fusion == "additive":
                    y = y + alpha * moe_out.hidden
                else:
                    y = (1.0 - alpha) * y + alpha * moe_out.hidden
        out = self.layer_norm(self.dropout(y) + tokens)  # [N, H]
        return flat.index_copy(0, token_idx, out).reshape(hidden.shape), moe_out
