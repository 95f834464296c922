"""HyMoE block: a dense shared expert plus a warm-up-gated sparse MoE, in place of the PFFN.

Reference: Li, Sun, Lim, "HyMoERec: Hybrid Mixture-of-Experts for Sequential Recommendation",
AAAI 2026 student abstract, arXiv 2511.06388. No official code exists.

NOTE: the paper gives the fusion ``y = y_dense + α · y_MoE`` with ``α = σ(a) · w(t)``; the
residual, LayerNorm and dropout around it are our reading (the host FFN's post-LN layout kept
as it is, so with α = 0 the block is the host's FFN), as is the ``convex`` fusion ablation.
"""

import torch
from torch import nn

from recbole_hymoe.blocks.feed_forward import TokenFeedForward
from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.ffn import get_activation
from recbole_hymoe.nn.moe import Experts

FUSIONS = ("additive", "convex")


class HybridFeedForward(TokenFeedForward):
    """``LayerNorm(x + Dropout(fuse(y_dense, y_MoE, α)))`` with ``α = σ(a) · w(t)``.

    ``y_dense = W_2 Dropout_inner(act(W_1 x + b_1)) + b_2`` is the shared expert every token passes
    through (RecBole's ``FeedForward`` inner MLP, same parameter names; Mamba4Rec's FFN adds the
    inner dropout, RecBole's has none); ``y_MoE`` is the package's
    :class:`~recbole_hymoe.nn.moe.SparseMoE`. Fusion ``additive``: ``y_dense + α · y_MoE``
    (paper); ``convex``: ``(1 - α) · y_dense + α · y_MoE``. Without ``moe`` the block is exactly
    RecBole's ``FeedForward``.

    Args:
        hidden_size (int): H.
        inner_size (int): inner size of the dense branch.
        hidden_act (str): activation of every MLP.
        hidden_dropout_prob (float): dropout on the fused output.
        layer_norm_eps (float): LayerNorm epsilon.
        moe (MoESettings, optional): the sparse branch's settings; None = no sparse branch.
        expert_inner_size (int, optional): inner size of each expert (default: ``inner_size``).
        fusion (str): one of :data:`FUSIONS`.
        alpha_init (float): initial learnable logit ``a`` (σ(0) = 0.5).
        inner_dropout_prob (float): dropout after the activation inside the dense branch and
            every expert (0 for the transformer host, the host's dropout for Mamba4Rec's FFN).
    """

    def __init__(self, hidden_size, inner_size, hidden_act, hidden_dropout_prob, layer_norm_eps, moe=None,
                 expert_inner_size=None, fusion="additive", alpha_init=0.0, inner_dropout_prob=0.0):
        super().__init__(hidden_size, hidden_dropout_prob, layer_norm_eps)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r} is not one of {FUSIONS}")
        self.fusion = fusion
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.act = get_activation(hidden_act)
        self.inner_dropout = Dropout(inner_dropout_prob)
        self.moe = None
        if moe is not None:
            self.moe = moe.layer(Experts(moe.num_experts, hidden_size, expert_inner_size or inner_size,
                                         activation=hidden_act, dropout_prob=inner_dropout_prob))
            self.alpha_logit = nn.Parameter(torch.tensor(float(alpha_init)))

    def alpha(self, warmup):
        """Return ``α = σ(a) · w(t)`` (0 without a sparse branch)."""
        if self.moe is None:
            return torch.zeros(())
        return torch.sigmoid(self.alpha_logit) * warmup

    def transform(self, tokens, warmup=1.0):
        """Fuse the dense branch and the experts on ``tokens`` [N, H]; ``warmup`` is w(t) ∈ [0, 1]."""
        moe_out = self.moe(tokens) if self.moe is not None else None
        y = self.dense_2(self.inner_dropout(self.act(self.dense_1(tokens))))
        if moe_out is None:
            return y, None
        alpha = self.alpha(warmup)
        if self.fusion == "additive":
            return y + alpha * moe_out.hidden, moe_out
        return (1.0 - alpha) * y + alpha * moe_out.hidden, moe_out
