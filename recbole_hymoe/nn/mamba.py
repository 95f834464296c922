"""Mamba-1 selective state-space mixer, with optional RoPE, on the package's selective scan.

Reference: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv 2312.00752, §3 and Algorithm 2. Official implementation: state-spaces/mamba,
``mamba_ssm/modules/mamba_simple.py`` (``Mamba``), whose structure, parameter shapes and
initialisation this module follows.

Glossary: B batch, L length, H ``d_model``, Di = expand·H inner channels, N ``d_state``,
R ``dt_rank`` = ⌈H / 16⌉, K ``d_conv``.

NOTE (RoPE inside the SSM, the HM2Rec reconstruction): with ``rope_target='bc'`` the per-step
B_t and C_t are rotated pairwise by position (RoPE) and A is tied within each rotated pair
(A_log has N/2 free entries per channel, S4D-real init 1, 1, 2, 2, …), so the kernel
``C_tᵀ R(t)ᵀ Π exp(Δ A) R(s) B_s`` depends on t and s only through t - s (per pair, the decay is
a scalar that commutes with the rotation). ``rope_target='input'`` rotates the mixer input
(an absolute-position signal only).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from recbole_hymoe.nn.rope import apply_rope, rope_angles
from recbole_hymoe.nn.scan import selective_scan

ROPE_TARGETS = ("none", "bc", "input")
MAMBA_INITS = ("mamba", "mamba4rec")


class MambaMixer(nn.Module):
    """Mamba-1 block: in-projection, causal depthwise conv + SiLU, selective scan, SiLU(z) gate.

    ``[x, z] = W_in h``; ``x ← SiLU(conv(x))``; ``[δ, B, C] = W_x x``; ``Δ = softplus(W_dt δ + b_dt)``;
    ``y = scan(x, Δ, A = -exp(A_log), B, C) + D ⊙ x``; ``out = W_out (y ⊙ SiLU(z))``.

    Args:
        d_model (int): H.
        d_state (int): N (even with ``rope_target='bc'``).
        d_conv (int): K, causal convolution width.
        expand (int): Di / H.
        rope_target (str): one of :data:`ROPE_TARGETS`.
        rope_base (float): RoPE base.
        dt_min, dt_max, dt_init_floor (float): Δ initialisation (log-uniform in [dt_min, dt_max]).
        scan_backend (str): :func:`~recbole_hymoe.nn.scan.selective_scan` backend.
    """

    def __init__(self, d_model, d_state=32, d_conv=4, expand=2, rope_target="none", rope_base=10000.0,
                 dt_min=1e-3, dt_max=1e-1, dt_init_floor=1e-4, scan_backend="auto"):
        super().__init__()
        if rope_target not in ROPE_TARGETS:
            raise ValueError(f"rope_target={rope_target!r} is not one of {ROPE_TARGETS}")
        if rope_target == "bc" and d_state % 2:
            raise ValueError(f"rope_target='bc' rotates pairs of the state: d_state={d_state} must be even")
        if rope_target == "input" and d_model % 2:
            raise ValueError(f"rope_target='input' rotates pairs of the input: d_model={d_model} must be even")
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.rope_target = rope_target
        self.rope_base = rope_base
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        free_states = d_state // 2 if rope_target == "bc" else d_state  # A tied within rotated pairs
        self.A_log = nn.Parameter(torch.empty(self.d_inner, free_states))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.reset_parameters()

    def reset_parameters(self):
        """Mamba's initialisation: S4D-real A, D = 1, W_dt ~ U(±R^-½), b_dt = softplus⁻¹(Δ₀) with
        Δ₀ log-uniform in [dt_min, dt_max] (floored); the other layers keep PyTorch's default."""
        for layer in (self.in_proj, self.conv1d, self.x_proj, self.out_proj):
            layer.reset_parameters()
        free = self.A_log.shape[1]
        self.A_log.data.copy_(torch.log(torch.arange(1, free + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        nn.init.ones_(self.D)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(self.dt_max) - math.log(self.dt_min))
                       + math.log(self.dt_min))
        dt = dt.clamp(min=self.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    def A(self):
        """Return A = -exp(A_log), [Di, N] (pairs repeated when tied)."""
        A = -torch.exp(self.A_log.float())
        return A.repeat_interleave(2, dim=1) if self.rope_target == "bc" else A

    def forward(self, hidden):
        """Mix a sequence causally.

        Args:
            hidden (FloatTensor): [B, L, H], position 0 first (right padding cannot reach
                earlier positions: every operation is causal).

        Returns:
            FloatTensor: [B, L, H].
        """
        length = hidden.size(1)
        if self.rope_target == "input":
            hidden = apply_rope(hidden, rope_angles(length, hidden.size(-1), self.rope_base, hidden.device))
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [B, L, Di] each
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))  # causal conv
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # [B, L, Di]
        if self.rope_target == "bc":
            angles = rope_angles(length, self.d_state, self.rope_base, hidden.device)
            B, C = apply_rope(B, angles), apply_rope(C, angles)
        y = selective_scan(x, delta, self.A(), B, C, backend=self.scan_backend) + self.D * x
        return self.out_proj(y * F.silu(z))
