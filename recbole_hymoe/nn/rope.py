"""Rotary position embedding (RoPE) on consecutive pairs of a feature dimension.

Reference: Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding",
arXiv 2104.09864, eq. (34): pair k of a vector at position t is rotated by the angle t·θ_k,
θ_k = base^(-2k/dim).
"""

import torch


def rope_angles(length, dim, base=10000.0, device=None):
    """Return the rotation angles ``t·θ_k``, [L, dim/2], for positions t = 0 … L-1."""
    if dim % 2:
        raise ValueError(f"RoPE rotates pairs: the dimension {dim} must be even")
    theta = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)  # [dim/2]
    positions = torch.arange(length, device=device, dtype=torch.float64)
    return positions[:, None] * theta[None, :]


def apply_rope(x, angles):
    """Rotate consecutive pairs ``(x[2k], x[2k+1])`` of the last dimension by ``angles``.

    Args:
        x (Tensor): [..., L, dim].
        angles (Tensor): [L, dim/2] from :func:`rope_angles`.

    Returns:
        Tensor: like ``x``.
    """
    cos = torch.cos(angles).to(x.dtype)
    sin = torch.sin(angles).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # [..., L, dim/2]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)  # [..., L, dim/2, 2]
    return rotated.flatten(-2)
