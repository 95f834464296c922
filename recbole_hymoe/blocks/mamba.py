"""Mamba host layer (Mamba4Rec's layout), its FFN optionally replaced by the HyMoE block.

Reference: Chengkai Liu et al., "Mamba4Rec: Towards Efficient Sequential Recommendation with
Selective State Space Models", arXiv 2403.03900; official code chengkai-liu/Mamba4Rec
(``MambaLayer`` and ``FeedForward`` in ``mamba4rec.py``, CUDA kernels; this host runs the
package's selective scan on any device).
"""

import torch
from torch import nn

from recbole_hymoe.blocks.hybrid_ffn import HybridFeedForward
from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.mamba import MambaMixer


class MambaLayer(nn.Module):
    """``h = LN(Dropout(Mamba(x)) [+ x when residual])``, then the FFN ``LN(h + Dropout(FFN(h)))``.

    Mamba4Rec adds the residual around the Mamba block only when it stacks several layers.

    Args:
        hidden_size (int): H.
        hidden_dropout_prob (float): dropout after Mamba, inside and after the FFN.
        layer_norm_eps (float): LayerNorm epsilon.
        residual (bool): add the layer input to the Mamba output.
        mixer_kwargs (dict): :class:`~recbole_hymoe.nn.mamba.MambaMixer` arguments.
        **ffn_kwargs: the remaining :class:`HybridFeedForward` arguments (``num_experts=0`` is
            Mamba4Rec's FFN).
    """

    def __init__(self, hidden_size, hidden_dropout_prob, layer_norm_eps, residual, mixer_kwargs, **ffn_kwargs):
        super().__init__()
        self.residual = residual
        self.mamba = MambaMixer(hidden_size, **mixer_kwargs)
        self.dropout = Dropout(hidden_dropout_prob)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = HybridFeedForward(
            hidden_size=hidden_size,
            hidden_dropout_prob=hidden_dropout_prob,
            layer_norm_eps=layer_norm_eps,
            inner_dropout_prob=hidden_dropout_prob,
            **ffn_kwargs,
        )

    def forward(self, hidden, mask, warmup=1.0, query_index=None):
        """Apply the layer.

        Args:
            hidden (FloatTensor): [B, L, H].
            mask (BoolTensor): [B, L], True for real tokens.
            warmup (float or FloatTensor): w(t) of the HyMoE block.
            query_index (LongTensor, optional): [B]; run the FFN at this one position per
                sequence only (the recurrence itself needs every earlier position).

        Returns:
            tuple: [B, L, H] (or [B, 1, H] with ``query_index``) and the MoEOutput or None.
        """
        mixed = self.dropout(self.mamba(hidden))
        hidden = self.layer_norm(mixed + hidden if self.residual else mixed)
        if query_index is not None:
            hidden = hidden[torch.arange(hidden.size(0), device=hidden.device), query_index].unsqueeze(1)
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return self.feed_forward(hidden, mask, warmup)
