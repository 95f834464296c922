"""Causal multi-head self-attention in RecBole's post-LN layout."""

import math

import torch
from torch import nn
from torch.nn import functional as F

from recbole_hymoe.nn.dropout import Dropout, dropout


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

    Same parameters and function as RecBole's ``MultiHeadAttention``. Without attention dropout
    (evaluation, or ``attn_dropout_prob = 0``) the score/softmax/value product runs in PyTorch's
    fused ``scaled_dot_product_attention``; with it, the same product is written out so the
    probabilities get this package's faster CPU dropout (measured ≈ 30 % faster forward and
    backward than the fused kernel's dropout path at [128, 2, 50, 50]).

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
        self.out_dropout = Dropout(hidden_dropout_prob)

    def _heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_size).transpose(1, 2)  # [B, nh, L, dh]

    def forward(self, hidden, attn_mask, query_index=None):
        """Attend.

        Args:
            hidden (FloatTensor): [B, L, H].
            attn_mask (FloatTensor): [B, 1, L, L] additive, see :func:`causal_attention_mask`.
            query_index (LongTensor, optional): [B]; attend from this one position per sequence
                only (same values as the full computation at those positions).

        Returns:
            FloatTensor: [B, L, H], or [B, 1, H] with ``query_index``.
        """
        queries = hidden
        if query_index is not None:
            batch = torch.arange(hidden.size(0), device=hidden.device)
            queries = hidden[batch, query_index].unsqueeze(1)  # [B, 1, H]
            attn_mask = attn_mask[batch, :, query_index].unsqueeze(2)  # [B, 1, 1, L]
        q, k, v = self._heads(self.query(queries)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        if self.training and self.attn_dropout_prob > 0:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + attn_mask  # [B, nh, Lq, L]
            probs = dropout(torch.softmax(scores, dim=-1), self.attn_dropout_prob, True)
            context = probs @ v  # [B, nh, Lq, dh]
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        context = context.transpose(1, 2).reshape(queries.shape)  # [B, nh, Lq, dh] -> [B, Lq, H]
        return self.layer_norm(self.out_dropout(self.dense(context)) + queries)
