"""Attention layer and mask against RecBole's own implementation."""

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import MultiHeadAttention as RecBoleMultiHeadAttention

from recbole_hymoe.nn.attention import MultiHeadAttention, causal_attention_mask


def test_causal_mask_equals_recbole_mask():
    item_seq = torch.tensor([[3, 5, 2, 0, 0], [1, 0, 0, 0, 0], [4, 4, 4, 4, 4]])
    ours = causal_attention_mask(item_seq)
    theirs = SequentialRecommender.get_attention_mask(None, item_seq)
    assert torch.equal(ours, theirs)


def test_attention_equals_recbole_attention_with_same_weights():
    ours = MultiHeadAttention(2, 16, 0.0, 0.0, 1e-12).eval()
    theirs = RecBoleMultiHeadAttention(2, 16, 0.0, 0.0, 1e-12).eval()
    state = {k.replace("LayerNorm", "layer_norm"): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    item_seq = torch.tensor([[3, 5, 2, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    hidden = torch.randn(2, 6, 16)
    mask = causal_attention_mask(item_seq)
    assert torch.allclose(ours(hidden, mask), theirs(hidden, mask), atol=1e-6)


def test_attention_is_causal():
    layer = MultiHeadAttention(2, 16, 0.0, 0.0, 1e-12).eval()
    item_seq = torch.ones(1, 6, dtype=torch.long)
    hidden = torch.randn(1, 6, 16)
    changed = hidden.clone()
    changed[:, 4:] = torch.randn(1, 2, 16)
    mask = causal_attention_mask(item_seq)
    assert torch.allclose(layer(hidden, mask)[:, :4], layer(changed, mask)[:, :4], atol=1e-6)


def test_attention_at_one_query_equals_the_full_computation_there():
    layer = MultiHeadAttention(2, 16, 0.0, 0.0, 1e-12).eval()
    item_seq = torch.tensor([[3, 5, 2, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])
    hidden = torch.randn(3, 6, 16)
    mask = causal_attention_mask(item_seq)
    last = torch.tensor([2, 5, 0])
    full = layer(hidden, mask)
    single = layer(hidden, mask, query_index=last)
    assert single.shape == (3, 1, 16)
    assert torch.allclose(single[:, 0], full[torch.arange(3), last], atol=1e-6)
