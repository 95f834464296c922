"""Causal multi-head self-attention in RecBole's post-LN layout, on PyTorch's fused kernel."""

import torch
from torch import nn
from torch.nn import functional as F


def causal_attention_mask(item_seq):
    """Additive mask of RecBole's ``SequentialRecommender.get_attention_mask`` (unidirectional).

    Args:
        item_seq (LongTensor): [B, L], 0 = padding.

    Returns:
        FloatTensor: [B, 1, L, L], 0 where query i may attend key j (j ≤ i and j real),
        -10000 elsewhere (RecBole's value, kept so scores match RecBole's SASRec).
    """
    keys = (item_seq != 0).unsqueeze(1).unsqueeze(2)  # [B, 1, 1, L]
    allowed = torch.tril(keys.expand(-1, -1, item_seq.size(-1), -1))  # [B, 1, L, L]
    return torch.where(allowed, 0.0, -10000.0)


class MultiHeadAttention(nn.Module):
    """``LayerNorm(x + Dropout(W_o · softmax(Q Kᵀ / √d_h + mask) V))`` (RecBole's layout).

    Same parameters and function as RecBole's ``MultiHeadAttention``; the score/softmax/value
    product runs in ``F.scaled_dot_product_attention``.

    Args:
        n_heads (int): heads; must divide ``hidden_size``.
        hidden_size (int): H.
        hidden_dropout_prob (float): dropout on the output projection.
        attn_dropout_prob (float): dropout on the attention probabilities.
        layer_norm_eps (float): LayerNorm epsilon.
    """

    def __init__(self, n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} is not a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.attn_dropout_prob = attn_dropout_prob
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)

    def _heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_size).transpose(1, 2)  # [B, nh, L, dh]

    def forward(self, hidden, attn_mask):
        """Attend.

        Args:
            hidden (FloatTensor): [B, L, H].
            attn_mask (FloatTensor): [B, 1, L, L] additive, see :func:`causal_attention_mask`.

        Returns:
            FloatTensor: [B, L, H].
        """
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        dropout = self.attn_dropout_prob if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        context = context.transpose(1, 2).reshape(hidden.shape)  # [B, nh, L, dh] -> [B, L, H]
        return self.layer_norm(self.out_dropout(self.dense(context)) + hidden)
