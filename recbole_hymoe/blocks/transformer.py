"""Transformer host layer of HyMoERec: RecBole SASRec's layer with the HyMoE block as its FFN."""

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

    def forward(self, hidden, attn_mask, mask, warmup=1.0):
        """Args: hidden [B, L, H]; attn_mask [B, 1, L, L] additive; mask [B, L] real tokens;
        warmup w(t). Returns: ([B, L, H], MoEOutput or None)."""
        return self.feed_forward(self.attention(hidden, attn_mask), mask, warmup)
