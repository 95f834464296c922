"""The Lorentz (hyperboloid) model of hyperbolic space with curvature -c.

Points live on the upper sheet ``{x ∈ R^{d+1} : ⟨x, x⟩_L = -K, x₀ > 0}`` with ``K = 1/c`` and
the Minkowski inner product ``⟨x, y⟩_L = -x₀ y₀ + Σ_{k≥1} x_k y_k``; the origin is
``o = (√K, 0, …, 0)``. Tangent vectors at o have time coordinate 0, so they are passed around as
their d spatial coordinates only ("tangent coordinates", what a Euclidean layer produces).

Glossary: d spatial dimension (the model's H), ``...`` any leading shape, c curvature (> 0),
K = 1/c.

References:
    Nickel & Kiela, "Learning Continuous Hierarchies in the Lorentz Model of Hyperbolic
    Geometry", ICML 2018; Chami et al., "Hyperbolic Graph Convolutional Neural Networks"
    (HGCN), NeurIPS 2019; Sun et al., "HGCF: Hyperbolic Graph Convolution Networks for
    Collaborative Filtering", WWW 2021 (layer6ai-labs/HGCF, ``manifolds/hyperboloid.py``).

NOTE (own code, geoopt only as a test oracle): these are the ~40 lines of closed forms HGCF
uses, written here rather than depending on geoopt's ``Lorentz`` at runtime because (1) the
model needs a clamp geoopt does not have (``expmap0`` has no tangent-norm limit, and the
measured float32 drift of the hyperboloid constraint reaches 31 at ‖v‖ = 10), (2) the compute
dtype must be chosen by the caller (float64 for the manifold maths, float32 elsewhere),
(3) only maps at the origin are needed, whose tangent vectors we keep without the time
coordinate geoopt expects, and (4) it keeps the runtime dependencies at torch. The test
``tests/nn/test_lorentz.py`` checks every function against geoopt 0.5.1 (geoopt's ``k`` is our
K) when geoopt is installed.

Numerics: ``log_o`` uses ``asinh(‖x_s‖/√K)`` instead of ``arcosh(x₀/√K)``: identical on the
sheet, well conditioned near the origin (arcosh has an infinite slope at 1), and it makes
``log_o(x) = log_o(proj(x))`` for any x. ``distance`` writes the arcosh argument as
``1 + m`` with ``m = ⟨x-y, x-y⟩_L / (2K)`` (equal to ``-⟨x,y⟩_L/K - 1`` on the sheet) and
takes ``log1p(m + √(m(m+2)))``: the direct form loses ``eps·x₀·y₀`` to cancellation, which at
the norm limit (x₀ ≈ 1e4) puts ``d(x, x)`` near 1e-5 even in float64; ``m`` is clamped at eps
(the arcosh argument at ``1 + eps``), so ``d(x, x) = √K·√(2·eps)`` ≈ 4e-8 in float64.
"""

import torch

MAX_TANGENT_NORM = 10.0
# Smallest norm divided by (float64 and float32 alike) and arcosh margin per dtype.
MIN_NORM = 1e-15
ACOSH_EPS = {torch.float64: 1e-15, torch.float32: 1e-7}


def _sqrt_k(c, ref):
    """Return √K = c^(-1/2) as a tensor of ``ref``'s dtype and device (``c`` float or tensor)."""
    return torch.as_tensor(c, dtype=ref.dtype, device=ref.device).rsqrt()


def minkowski_dot(x, y, keepdim=False):
    """Minkowski inner product ``⟨x, y⟩_L = -x₀ y₀ + Σ_{k≥1} x_k y_k``.

    Args:
        x, y (FloatTensor): [..., d+1], broadcastable.
        keepdim (bool): keep the last dimension (size 1).

    Returns:
        FloatTensor: [...] (or [..., 1]).
    """
    prod = x * y
    out = prod[..., 1:].sum(-1) - prod[..., 0]
    return out.unsqueeze(-1) if keepdim else out


def origin(dim, c, dtype=torch.float64, device=None):
    """The origin ``o = (√K, 0, …, 0)`` of the d-dimensional hyperboloid, [d+1]."""
    point = torch.zeros(dim + 1, dtype=dtype, device=device)
    point[0] = _sqrt_k(c, point)
    return point


def project(x, c):
    """Put ``x`` [..., d+1] back on the sheet by recomputing ``x₀ = √(K + ‖x_s‖²)``."""
    spatial = x[..., 1:]
    time = torch.sqrt(1.0 / torch.as_tensor(c, dtype=x.dtype, device=x.device) + spatial.pow(2).sum(-1, keepdim=True))
    return torch.cat([time, spatial], dim=-1)


def clip_tangent(u, max_norm=MAX_TANGENT_NORM):
    """Rescale tangent coordinates ``u`` [..., d] whose norm exceeds ``max_norm`` to that norm."""
    norm = u.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return u * (max_norm / norm).clamp(max=1.0)


def exp_o(u, c, max_norm=MAX_TANGENT_NORM):
    """Exponential map at the origin, re-projected onto the sheet.

    ``exp_o(u) = (√K cosh(‖u‖/√K), √K sinh(‖u‖/√K) u/‖u‖)`` after clipping ``‖u‖ ≤ max_norm``.

    Args:
        u (FloatTensor): [..., d] tangent coordinates at o (the time coordinate, 0, left out).
        c (float or FloatTensor): curvature c > 0.
        max_norm (float): tangent-norm limit (float64 keeps the sheet to ≈ 1e-7 up to 10).

    Returns:
        FloatTensor: [..., d+1] points on the hyperboloid.
    """
    u = clip_tangent(u, max_norm)
    sqrt_k = _sqrt_k(c, u)
    norm = u.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    spatial = sqrt_k * torch.sinh(norm / sqrt_k) * u / norm
    return project(torch.cat([torch.zeros_like(norm), spatial], dim=-1), c)


def log_o(x, c):
    """Logarithmic map at the origin: ``log_o(x) = √K asinh(‖x_s‖/√K) x_s/‖x_s‖``.

    Args:
        x (FloatTensor): [..., d+1] points on the hyperboloid (only x_s = x[..., 1:] is read).
        c (float or FloatTensor): curvature c > 0.

    Returns:
        FloatTensor: [..., d] tangent coordinates at o.
    """
    spatial = x[..., 1:]
    sqrt_k = _sqrt_k(c, spatial)
    norm = spatial.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return sqrt_k * torch.asinh(norm / sqrt_k) * spatial / norm


def distance(x, y, c):
    """Geodesic distance ``d_L(x, y) = √K arcosh(-⟨x, y⟩_L / K)``, argument clamped ≥ 1 + eps.

    Computed as ``√K log1p(m + √(m(m+2)))`` with ``m = ⟨x-y, x-y⟩_L / (2K)`` (see the module
    notes), which assumes both points on the sheet (every map here re-projects).

    Args:
        x, y (FloatTensor): [..., d+1] points on the hyperboloid, broadcastable.
        c (float or FloatTensor): curvature c > 0.

    Returns:
        FloatTensor: [...] distances ≥ 0.
    """
    sqrt_k = _sqrt_k(c, x)
    diff = x - y
    m = (minkowski_dot(diff, diff) * sqrt_k.pow(-2) / 2).clamp_min(ACOSH_EPS.get(x.dtype, 1e-7))
    return sqrt_k * torch.log1p(m + torch.sqrt(m * (m + 2)))


def centroid(s, c):
    """Lorentzian centroid of a non-negative weighted sum of points: ``√K s / √|⟨s, s⟩_L|``.

    ``s = Σ_j w_j x_j`` with ``w_j ≥ 0`` (e.g. ``Â X``) is time-like; the result is the point of
    the sheet on the ray through ``s`` (Law et al., "Lorentzian Distance Learning for Hyperbolic
    Representations", ICML 2019). Rows with no weight (``s = 0``) come out at the origin.

    Args:
        s (FloatTensor): [..., d+1].
        c (float or FloatTensor): curvature c > 0.

    Returns:
        FloatTensor: [..., d+1] points on the hyperboloid.
    """
    sqrt_k = _sqrt_k(c, s)
    scale = minkowski_dot(s, s, keepdim=True).abs().clamp_min(MIN_NORM).sqrt()
    return project(sqrt_k * s / scale, c)
