"""Inverted dropout whose mask is drawn with ``torch.rand`` on CPU.

Same distribution as ``torch.nn.Dropout`` (keep each element with probability 1-p, scale kept
ones by 1/(1-p)). Written by hand because on CPU PyTorch draws dropout masks with a per-element
Bernoulli sampler that measured ≈ 3× slower than a uniform draw plus a comparison (a
[128, 50, 64] mask: 9.7 ms vs 3.2 ms on 2 cores), which made dropout ≈ 20 % of a training step.
On other devices it is ``torch.nn.functional.dropout``.
"""

import torch
from torch import nn
from torch.nn import functional as F


def dropout(x, p, training):
    """Apply inverted dropout with drop probability ``p`` when ``training``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Drop-in for ``torch.nn.Dropout`` using :func:`dropout`.

    Args:
        p (float): drop probability in [0, 1].
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p={p} must be in [0, 1]")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
