"""Lorentz model: the sheet constraint, exp/log inverses, closed-form distances, geoopt agreement."""

import pytest
import torch

from recbole_hymoe.nn.lorentz import centroid, clip_tangent, distance, exp_o, log_o, minkowski_dot, origin, project

CURVATURES = [0.5, 1.0, 2.0]


def tangents(n, d, max_norm, dtype=torch.float64):
    """``n`` random tangent vectors in R^d with norms spread over (0, max_norm)."""
    u = torch.randn(n, d, dtype=dtype)
    return u / u.norm(dim=-1, keepdim=True) * torch.linspace(0.01, max_norm, n, dtype=dtype).unsqueeze(1)


@pytest.mark.parametrize("c", CURVATURES)
def test_exp_o_lands_on_the_sheet_in_float64_up_to_the_norm_limit(c):
    x = exp_o(tangents(64, 8, 10.0), c)
    inner = minkowski_dot(x, x)
    # project() makes x₀ exact; what is left is float64 rounding of x₀² (up to ≈ 1e12 here)
    assert torch.all((inner + 1.0 / c).abs() <= 1e-12 * (1.0 + x[:, 0] ** 2))
    assert torch.all(x[:, 0] > 0)
    assert minkowski_dot(origin(8, c), origin(8, c)).item() == pytest.approx(-1.0 / c)


@pytest.mark.parametrize("c", CURVATURES)
def test_log_o_inverts_exp_o_and_exp_o_inverts_log_o(c):
    u = tangents(64, 8, 9.9)
    assert torch.allclose(log_o(exp_o(u, c), c), u, rtol=1e-10, atol=1e-12)
    x = exp_o(tangents(64, 8, 5.0), c)
    assert torch.allclose(exp_o(log_o(x, c), c), x, rtol=1e-10, atol=1e-10)


def test_exp_o_clips_the_tangent_norm():
    u = tangents(16, 8, 40.0)
    back = log_o(exp_o(u, 1.0, max_norm=10.0), 1.0)
    assert torch.allclose(back.norm(dim=-1), u.norm(dim=-1).clamp(max=10.0), rtol=1e-10)
    assert torch.allclose(clip_tangent(u, 10.0), back, rtol=1e-9, atol=1e-12)


def test_log_o_reads_only_the_spatial_part():
    x = exp_o(tangents(8, 4, 3.0), 1.0)
    off_sheet = x.clone()
    off_sheet[:, 0] += 0.5
    assert torch.allclose(log_o(off_sheet, 1.0), log_o(project(off_sheet, 1.0), 1.0))


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_is_symmetric_zero_on_the_diagonal_and_the_geodesic_length(c):
    x, y = exp_o(tangents(32, 6, 10.0), c), exp_o(tangents(32, 6, 10.0).flip(0), c)
    assert torch.allclose(distance(x, y, c), distance(y, x, c), rtol=1e-12)
    assert torch.all(distance(x, x, c) < 1e-6)  # even at the norm limit, where x₀ ≈ 1e4 … 1e6
    # from the origin the distance is the tangent norm, for every curvature
    u = tangents(32, 6, 8.0)
    assert torch.allclose(distance(origin(6, c), exp_o(u, c), c), u.norm(dim=-1), rtol=1e-9)
    # two points on one geodesic through the origin: |a - b|
    v = torch.nn.functional.normalize(torch.randn(6, dtype=torch.float64), dim=0)
    a = torch.tensor([[0.3], [1.7], [2.5]], dtype=torch.float64)
    b = torch.tensor([[1.1], [0.2], [2.5]], dtype=torch.float64)
    assert torch.allclose(distance(exp_o(a * v, c), exp_o(b * v, c), c), (a - b).abs().squeeze(1), atol=1e-6)


def test_distance_depends_on_the_curvature_between_non_origin_points():
    u, w = tangents(8, 4, 2.0), tangents(8, 4, 2.0).flip(0)
    d1 = distance(exp_o(u, 1.0), exp_o(w, 1.0), 1.0)
    d2 = distance(exp_o(u, 2.0), exp_o(w, 2.0), 2.0)
    assert (d1 - d2).abs().max() > 1e-2


def test_centroid_is_on_the_sheet_and_fixes_single_points_and_mirror_pairs():
    c = 1.5
    x = exp_o(tangents(16, 4, 3.0), c)
    assert torch.allclose(centroid(2.0 * x, c), x, rtol=1e-10)  # weights rescale s, not the point
    mirror = torch.cat([x[:, :1], -x[:, 1:]], dim=-1)
    assert torch.allclose(centroid(x + mirror, c), origin(4, c).expand_as(x), atol=1e-10)
    mixed = centroid(0.3 * x + 0.7 * x.flip(0), c)
    assert torch.allclose(minkowski_dot(mixed, mixed), torch.full((16,), -1.0 / c, dtype=torch.float64), rtol=1e-9)
    assert torch.allclose(centroid(torch.zeros(2, 5, dtype=torch.float64), c), origin(4, c).expand(2, 5))


def test_maps_have_finite_gradients_at_the_origin_and_on_the_diagonal():
    u = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)  # e.g. a padding node
    w = tangents(3, 4, 2.0).requires_grad_()
    x = exp_o(w, 1.0)
    loss = log_o(exp_o(u, 1.0), 1.0).sum() + distance(exp_o(u, 1.0), x, 1.0).sum() + distance(x, x, 1.0).pow(2).sum()
    loss.backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(w.grad).all()


def test_a_learned_curvature_gets_gradient_only_from_distances_between_non_origin_points():
    log_c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    u, w = tangents(3, 4, 2.0), tangents(3, 4, 2.0).flip(0)
    c = log_c.exp()
    from_origin = distance(origin(4, c), exp_o(w, c), c).sum()  # = Σ‖w‖ for every c
    (grad,) = torch.autograd.grad(from_origin, log_c)
    assert grad.abs() < 1e-12
    c = log_c.exp()
    between = distance(exp_o(u, c), exp_o(w, c), c).sum()
    (grad,) = torch.autograd.grad(between, log_c)
    assert torch.isfinite(grad) and grad.abs() > 1e-3


def test_float32_round_trip_is_accurate_for_moderate_norms():
    u = tangents(32, 8, 3.0, dtype=torch.float32)
    assert torch.allclose(log_o(exp_o(u, 1.0), 1.0), u, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c", CURVATURES)
def test_agrees_with_geoopt(c):
    geoopt = pytest.importorskip(
        "geoopt", reason="geoopt (optional test dependency, pip install geoopt==0.5.1) is the oracle of this test"
    )
    # geoopt's k is our K = 1/c; a float64 k, else geoopt rounds √K to float32
    manifold = geoopt.Lorentz(k=torch.tensor(1.0 / c, dtype=torch.float64))
    u, w = tangents(32, 6, 6.0), tangents(32, 6, 6.0).flip(0)
    pad = torch.zeros(32, 1, dtype=torch.float64)
    x, y = exp_o(u, c), exp_o(w, c)
    assert torch.allclose(manifold.expmap0(torch.cat([pad, u], dim=-1)), x, rtol=1e-9, atol=1e-9)
    assert torch.allclose(manifold.logmap0(x)[:, 1:], u, rtol=1e-7, atol=1e-8)
    assert torch.allclose(manifold.logmap0(x)[:, 0], pad[:, 0], atol=1e-8)
    assert torch.allclose(manifold.dist(x, y), distance(x, y, c), rtol=1e-9, atol=1e-9)
    assert torch.allclose(manifold.inner(None, x, y), minkowski_dot(x, y), rtol=1e-12)
    assert torch.allclose(manifold.origin(7, dtype=torch.float64), origin(6, c))
