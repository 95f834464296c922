"""Position-wise feed-forward blocks computed on real tokens only: the shared post-LN residual
``LN(x + Dropout(FFN(x)))``, and the MoE-only FFN (HM2Rec's).

Glossary: B batch, L sequence length, H hidden size, N real (non-padding) tokens.
"""

from torch import nn

from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.moe import Experts


class TokenFeedForward(nn.Module):
    """``LayerNorm(x + Dropout(y(x)))`` over the real tokens; padding positions pass through.

    Only real tokens are computed: padding states are never read downstream (masked as
    attention keys, never gathered), so skipping them changes no real output and saves the
    padded share of the FFN work. Subclasses define ``y`` in :meth:`transform`.

    Args:
        hidden_size (int): H.
        hidden_dropout_prob (float): dropout on ``y``.
        layer_norm_eps (float): LayerNorm epsilon.
    """

    def __init__(self, hidden_size, hidden_dropout_prob, layer_norm_eps):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout_prob)

    def transform(self, tokens, **inputs):
        """Return ``y`` [N, H] of ``tokens`` [N, H] and the MoEOutput of those tokens (or None)."""
        raise NotImplementedError

    def forward(self, hidden, mask, **inputs):
        """Apply the block to the real tokens.

        Args:
            hidden (FloatTensor): [B, L, H].
            mask (BoolTensor): [B, L], True for real tokens.
            **inputs: what :meth:`transform` takes besides the tokens.

        Returns:
            tuple: output [B, L, H] and the :class:`~recbole_hymoe.nn.moe.MoEOutput` of the N
            real tokens (None without experts).
        """
        flat = hidden.reshape(-1, hidden.size(-1))  # [B·L, H]
        token_idx = mask.reshape(-1).nonzero(as_tuple=True)[0]  # [N]
        tokens = flat.index_select(0, token_idx)  # [N, H]
        y, moe_out = self.transform(tokens, **inputs)
        out = self.layer_norm(self.dropout(y) + tokens)  # [N, H]
        return flat.index_copy(0, token_idx, out).reshape(hidden.shape), moe_out


class MoEFeedForward(TokenFeedForward):
    """``LN(x + Dropout(y_MoE(x)))``: a sparse MoE of MLP experts in place of the FFN, no dense branch.

    Args:
        hidden_size (int): H.
        hidden_dropout_prob (float): dropout on the MoE output.
        layer_norm_eps (float): LayerNorm epsilon.
        moe (MoESettings): the model's MoE settings.
        inner_size (int): inner size of each expert.
        hidden_act (str): the experts' activation.
        inner_dropout_prob (float): dropout after the activation inside every expert.
    """

    def __init__(self, hidden_size, hidden_dropout_prob, layer_norm_eps, moe, inner_size, hidden_act,
                 inner_dropout_prob=0.0):
        super().__init__(hidden_size, hidden_dropout_prob, layer_norm_eps)
        self.moe = moe.layer(Experts(moe.num_experts, hidden_size, inner_size, activation=hidden_act,
                                     dropout_prob=inner_dropout_prob))

    def transform(self, tokens):
        moe_out = self.moe(tokens)
        return moe_out.hidden, moe_out
