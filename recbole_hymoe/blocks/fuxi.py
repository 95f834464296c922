"""FuXi block: adaptive multi-channel self-attention (AMS) + multi-stage FFN, dense padded form.

Reference: Ye et al., "FuXi-α: Scaling Recommendation Model with Feature Interaction Enhanced
Transformer", WWW'25 companion, arXiv 2502.03036, eq. (1)-(7). Official implementation:
USTC-StarTeam/FuXi-alpha, ``FuXiBlockJagged`` and ``MultistageFeedforwardNeuralNetwork`` in
``generative_recommenders/modeling/sequential/fuxi.py`` (jagged tensors there, dense here).

Glossary: B batch, N positions, W block width, H heads, Q = qk_head_dim, V = v_head_dim,
C channels (3: positional, temporal, semantic; 2 without the temporal one), F FFN inner size,
L_max = MAX_ITEM_LIST_LENGTH (the semantic channel's 1/n scale).

NOTE: Fuxi-MME's "MoE replacing relevant parameters" (``moe_target``) is our reconstruction
(see :class:`recbole_hymoe.models.fuxi.FuxiMME`); with ``moe`` = None this is FuXi-α's block.
"""

import torch
from torch import nn
from torch.nn import functional as F

from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.moe import Experts, LinearExperts
from recbole_hymoe.nn.relative_bias import RelativePositionBias, RelativeTimeBias

MOE_TARGETS = ("ffn", "w_o", "w_u")
RMS_EPS = 1e-6


def rms_norm(x):
    """RMSNorm without a learnable gain (FuXi-α's code), eps 1e-6."""
    return F.rms_norm(x, (x.size(-1),), eps=RMS_EPS)


class FuXiBlock(nn.Module):
    """One FuXi block.

    AMS (eq. 1-4): ``x̃ = RMSN(x)``; ``u, v, q, k = SiLU(x̃ W_uvqk)``; per head the channels
    ``A_pos v``, ``A_ts v``, ``A_sem v`` with ``A_sem = SiLU(q kᵀ) / L_max``, all causally masked
    (diagonal included) and sharing v; ``h = u ⊙ RMSN(concat)``.
    MFFN (eq. 5-7): ``o = W_o Dropout(h) + b_o + x``; ``x' = W_2 (SiLU(W_1 z) ⊙ W_3 z) + o`` with
    ``z = Dropout(RMSN(o))`` (stage 2 dropped when ``single_stage``); padding rows zeroed.

    Args:
        width (int): W.
        n_heads (int): H.
        qk_head_dim (int): Q.
        v_head_dim (int): V.
        ffn_inner (int): F.
        dropout_prob (float): dropout before W_o and before the SwiGLU.
        max_len (int): L_max.
        num_time_buckets (int): temporal-channel buckets (0 = no temporal channel).
        single_stage (bool): drop the SwiGLU stage (the paper's "w/o MFFN").
        moe (MoESettings, optional): replace ``moe_target`` by a
            :class:`~recbole_hymoe.nn.moe.SparseMoE` with these settings; None = FuXi-α's block.
        moe_target (str, optional): what the MoE replaces, one of :data:`MOE_TARGETS` (with ``moe``).
    """

    def __init__(self, width, n_heads, qk_head_dim, v_head_dim, ffn_inner, dropout_prob, max_len,
                 num_time_buckets=128, single_stage=False, moe=None, moe_target=None):
        super().__init__()
        self.n_heads, self.qk_dim, self.v_dim, self.max_len = n_heads, qk_head_dim, v_head_dim, max_len
        self.channels = 3 if num_time_buckets else 2
        self.u_width = self.channels * n_heads * v_head_dim
        if moe is not None and moe_target not in MOE_TARGETS:
            raise ValueError(f"moe_target={moe_target!r} is not one of {MOE_TARGETS}")
        self.moe_target = None if moe is None else moe_target
        u_in_projection = self.moe_target != "w_u"
        projected = (self.u_width if u_in_projection else 0) + n_heads * (v_head_dim + 2 * qk_head_dim)
        self.uvqk = nn.Linear(width, projected, bias=False)
        self.pos_bias = RelativePositionBias(max_len)
        self.time_bias = RelativeTimeBias(num_time_buckets) if num_time_buckets else None
        self.dropout = Dropout(dropout_prob)
        self.w_o = nn.Linear(self.u_width, width) if self.moe_target != "w_o" else None
        self.single_stage = single_stage
        if not single_stage and self.moe_target != "ffn":
            self.w_1 = nn.Linear(width, ffn_inner, bias=False)
            self.w_3 = nn.Linear(width, ffn_inner, bias=False)
            self.w_2 = nn.Linear(ffn_inner, width, bias=False)
        self.moe = None
        if moe is not None:
            if self.moe_target == "ffn":
                if single_stage:
                    raise ValueError("moe target 'ffn' needs the SwiGLU stage (single_stage=False)")
                experts = Experts(moe.num_experts, width, ffn_inner, activation="silu", gated=True, bias=False)
            elif self.moe_target == "w_o":
                experts = LinearExperts(moe.num_experts, self.u_width, width, bias=True)
            else:
                experts = LinearExperts(moe.num_experts, width, self.u_width, bias=False)
            self.moe = moe.layer(experts, router_size=width)

    def _moe(self, x, mask, route_from, set_embedding):
        """Run the MoE on the real tokens; the router sees ``route_from`` (+ the set embedding)."""
        if set_embedding is not None:
            route_from = route_from + set_embedding
        return self.moe(x, mask, router_input=route_from)

    def forward(self, x, mask, time_buckets=None, set_embedding=None, query_index=None):
        """Apply the block.

        Args:
            x (FloatTensor): [B, N, W], zero at padding.
            mask (BoolTensor): [B, N], True for real tokens.
            time_buckets (LongTensor, optional): [B, N, N] temporal buckets (required with a
                temporal channel).
            set_embedding (FloatTensor, optional): [B, 1, W] added to the MoE router input.
            query_index (LongTensor, optional): [B]; compute the output at this one position
                per sequence only (same values as the full computation there).

        Returns:
            tuple: [B, N, W] (or [B, 1, W] with ``query_index``) and the MoEOutput or None.
        """
        batch, length, _ = x.shape
        normed = rms_norm(x)  # [B, N, W]
        projected = F.silu(self.uvqk(normed))
        sizes = [self.n_heads * self.v_dim, self.n_heads * self.qk_dim, self.n_heads * self.qk_dim]
        if self.moe_target != "w_u":
            sizes = [self.u_width, *sizes]
        parts = torch.split(projected, sizes, dim=-1)
        u_part, (v, q, k) = (parts[0], parts[1:]) if self.moe_target != "w_u" else (None, parts)
        v = (v * mask.unsqueeze(-1)).view(batch, length, self.n_heads, self.v_dim)  # padded keys add 0
        q = q.view(batch, length, self.n_heads, self.qk_dim)
        k = k.view(batch, length, self.n_heads, self.qk_dim)
        residual, rows_mask, row_normed = x, mask, normed
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()  # [N, N] j ≤ i
        if query_index is not None:
            rows = torch.arange(batch, device=x.device)
            q = q[rows, query_index].unsqueeze(1)  # [B, 1, H, Q]
            causal = causal[query_index].unsqueeze(1)  # [B, 1, N]
            residual = x[rows, query_index].unsqueeze(1)
            row_normed = normed[rows, query_index].unsqueeze(1)
            rows_mask = torch.ones(batch, 1, dtype=torch.bool, device=x.device)
            if time_buckets is not None:
                time_buckets = time_buckets[rows, query_index].unsqueeze(1)  # [B, 1, N]
            if u_part is not None:
                u_part = u_part[rows, query_index].unsqueeze(1)
        semantic = F.silu(torch.einsum("bihd,bjhd->bhij", q, k)) / self.max_len  # [B, H, n, N]
        semantic = semantic * causal.unsqueeze(-3)
        pos = self.pos_bias(length, query_index) * causal  # [N, N] or [B, 1, N]
        pos_pattern = "ij,bjhd->bihd" if pos.dim() == 2 else "bij,bjhd->bihd"
        channels = [torch.einsum(pos_pattern, pos, v)]  # [B, n, H, V]
        if self.time_bias is not None:
            ts = self.time_bias(time_buckets) * causal  # [B, n, N]
            channels.append(torch.einsum("bij,bjhd->bihd", ts, v))
        channels.append(torch.einsum("bhij,bjhd->bihd", semantic, v))
        attended = torch.cat(channels, dim=-1).reshape(batch, -1, self.u_width)  # [B, n, H, C·V] -> [B, n, C·H·V]

        moe_out = None
        if self.moe_target == "w_u":
            moe_out = self._moe(row_normed, rows_mask, row_normed, set_embedding)
            u_part = F.silu(moe_out.hidden)
        h = u_part * rms_norm(attended)  # [B, n, C·H·V]
        if self.moe_target == "w_o":
            moe_out = self._moe(self.dropout(h), rows_mask, row_normed, set_embedding)
            o = moe_out.hidden + residual
        else:
            o = self.w_o(self.dropout(h)) + residual
        if not self.single_stage:
            normed_o = rms_norm(o)
            z = self.dropout(normed_o)
            if self.moe_target == "ffn":
                moe_out = self._moe(z, rows_mask, normed_o, set_embedding)
                o = moe_out.hidden + o
            else:
                o = self.w_2(F.silu(self.w_1(z)) * self.w_3(z)) + o
        return o * rows_mask.unsqueeze(-1), moe_out
