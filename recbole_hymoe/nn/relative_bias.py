"""Learned relative-position and log-bucketed time biases (FuXi-α's positional and temporal channels).

Reference: Ye et al., "FuXi-α: Scaling Recommendation Model with Feature Interaction Enhanced
Transformer", WWW'25 companion, arXiv 2502.03036, §4.2.1; official code USTC-StarTeam/FuXi-alpha,
``SeperatedRelativeBucketedTimeAndPositionBasedBias`` in ``modeling/sequential/fuxi.py``.

Glossary: B batch, N sequence length (padded), i query position, j key position.
"""

import torch
from torch import nn

# HSTU/FuXi-α divide ln|Δt| by 0.301 (≈ log10 2, inherited from HSTU), so buckets are not log2.
TIME_BUCKET_DIVISOR = 0.301


def time_buckets(delta, num_buckets=128):
    """Bucket of a time difference: ``clamp(floor(ln(max(|Δ|, 1)) / 0.301), 0, num_buckets)``.

    Args:
        delta (Tensor): time differences in seconds, any shape.
        num_buckets (int): the largest bucket index (there are ``num_buckets + 1`` buckets).

    Returns:
        LongTensor: bucket indices, same shape (60 s -> 13, 1 h -> 27, 1 day -> 37, 30 days -> 49).
    """
    magnitude = delta.abs().clamp(min=1.0).double()  # float64: no rounding at bucket boundaries
    return torch.floor(torch.log(magnitude) / TIME_BUCKET_DIVISOR).long().clamp(0, num_buckets)


def next_event_time_deltas(timestamps, seq_len, target_time):
    """``Δ[b, i, j] = t_next[b, i] - t[b, j]`` with ``t_next[i]`` the time of the event after i.

    ``t_next[i] = t[i + 1]`` inside the sequence and the target's time at ``i = len - 1``, as
    FuXi-α's official code computes the temporal channel.

    Args:
        timestamps (FloatTensor): [B, N] seconds, right-padded.
        seq_len (LongTensor): [B].
        target_time (FloatTensor): [B] time of the item that follows the sequence.

    Returns:
        FloatTensor: [B, N, N] (float64, so second-level differences of Unix times survive).
    """
    times = timestamps.double()
    t_next = torch.zeros_like(times)
    t_next[:, :-1] = times[:, 1:]
    t_next[torch.arange(times.size(0), device=times.device), seq_len - 1] = target_time.double()
    return t_next.unsqueeze(2) - times.unsqueeze(1)  # [B, N, 1] - [B, 1, N]


class RelativePositionBias(nn.Module):
    """``A_pos[i, j] = β[j - i]``: one learned scalar per relative offset, shared by all heads.

    Args:
        max_len (int): N; offsets -(N-1) … N-1 are learned (2N - 1 scalars).
    """

    def __init__(self, max_len):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(2 * max_len - 1))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, length, query_index=None):
        """Return A_pos for the first ``length`` positions.

        Args:
            length (int): n ≤ N.
            query_index (LongTensor, optional): [B]; only these query rows -> [B, 1, n].

        Returns:
            FloatTensor: [n, n], or [B, 1, n] with ``query_index``.
        """
        keys = torch.arange(length, device=self.weight.device)
        if query_index is None:
            queries = keys.unsqueeze(1)  # [n, 1]
        else:
            queries = query_index.view(-1, 1, 1)  # [B, 1, 1]
        return self.weight[self.max_len - 1 + keys - queries]


class RelativeTimeBias(nn.Module):
    """``A_ts[b, i, j] = w[bucket(t_next[b, i] - t[b, j])]``: a learned scalar per log-time bucket.

    Args:
        num_buckets (int): largest bucket index (``num_buckets + 1`` scalars).
    """

    def __init__(self, num_buckets=128):
        super().__init__()
        self.num_buckets = num_buckets
        self.weight = nn.Parameter(torch.empty(num_buckets + 1))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, buckets):
        """Look the buckets up.

        Args:
            buckets (LongTensor): [B, n, n] (or [B, 1, n]) from :func:`time_buckets`.

        Returns:
            FloatTensor: same shape.
        """
        return self.weight[buckets]
