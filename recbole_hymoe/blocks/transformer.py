"""Transformer host layer of HyMoERec: RecBole SASRec's layer with the HyMoE block as its FFN."""

import torch
from torch import nn

from recbole_hymoe.blocks.hybrid_ffn import HybridFeedForward
from recbole_hymoe.nn.attention import MultiHeadAttention


class TransformerMoELayer(nn.Module):
    """Causal multi-head self-attention followed by :class:`HybridFeedForward`, both post-LN.

    Args:
        n_heads (int): attention heads.
        hidden_size (int): H.
        hidden_dropout_prob (float): dropout after attention output and FFN output.
        attn_dropout_prob (float): attention-probability dropout.
        layer_norm_eps (float): LayerNorm epsilon.
        **ffn_kwargs: the remaining :class:`HybridFeedForward` arguments.
    """

    def __init__(self, n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps, **ffn_kwargs):
        super().__init__()
        self.attention = MultiHeadAttention(
            n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps
        )
        self.feed_forward = HybridFeedForward(
            hidden_size=hidden_size,
            hidden_dropout_prob=hidden_dropout_prob,
            layer_norm_eps=layer_norm_eps,
            **ffn_kwargs,
        )

    def forward(self, hidden, attn_mask, mask, warmup=1.0, query_index=None):
        """Apply the layer.

        Args:
            hidden (FloatTensor): [B, L, H].
            attn_mask (FloatTensor): [B, 1, L, L] additive, see
                :func:`~recbole_hymoe.nn.attention.causal_attention_mask`.
            mask (BoolTensor): [B, L], True for real tokens.
            warmup (float or FloatTensor): w(t) of the HyMoE block.
            query_index (LongTensor, optional): [B]; compute the output at this one position
                per sequence only (the last layer when only the last state is needed).

        Returns:
            tuple: [B, L, H] (or [B, 1, H] with ``query_index``) and the MoEOutput or None.
        """
        hidden = self.attention(hidden, attn_mask, query_index)
        if query_index is not None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)  # [B, 1]
        return self.feed_forward(hidden, mask, warmup=warmup)
