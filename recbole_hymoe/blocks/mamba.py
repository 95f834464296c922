"""Mamba host layer (Mamba4Rec's layout), its FFN optionally the HyMoE block or an MoE-FFN.

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
        feed_forward (type): the FFN block, :class:`~recbole_hymoe.blocks.hybrid_ffn.HybridFeedForward`
            (without ``moe``: Mamba4Rec's FFN) or :class:`~recbole_hymoe.blocks.feed_forward.MoEFeedForward`.
        **ffn_kwargs: its remaining arguments.
    """

    def __init__(self, hidden_size, hidden_dropout_prob, layer_norm_eps, residual, mixer_kwargs,
                 feed_forward=HybridFeedForward, **ffn_kwargs):
        super().__init__()
        self.residual = residual
        self.mamba = MambaMixer(hidden_size, **mixer_kwargs)
        self.dropout = Dropout(hidden_dropout_prob)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = feed_forward(
            hidden_size=hidden_size,
            hidden_dropout_prob=hidden_dropout_prob,
            layer_norm_eps=layer_norm_eps,
            inner_dropout_prob=hidden_dropout_prob,
            **ffn_kwargs,
        )

    def forward(self, hidden, mask, query_index=None, **ffn_inputs):
        """Apply the layer.

        Args:
            hidden (FloatTensor): [B, L, H].
            mask (BoolTensor): [B, L], True for real tokens.
            query_index (LongTensor, optional): [B]; run the FFN at this one position per
                sequence only (the recurrence itself needs every earlier position).
            **ffn_inputs: what the FFN takes besides its tokens (the HyMoE block's ``warmup``).

        Returns:
            tuple: [B, L, H] (or [B, 1, H] with ``query_index``) and the MoEOutput or None.
        """
        mixed = self.dropout(self.mamba(hidden))
        hidden = self.layer_norm(mixed + hidden if self.residual else mixed)
        if query_index is not None:
            hidden = hidden[torch.arange(hidden.size(0), device=hidden.device), query_index].unsqueeze(1)  # [B, 1, H]
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return self.feed_forward(hidden, mask, **ffn_inputs)
