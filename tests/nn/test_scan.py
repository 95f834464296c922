"""Selective scan: the compiled CPU path against the float64 sequential oracle, values and gradients."""

import pytest
import torch

from recbole_hymoe.nn.scan import resolve_backend, selective_scan, selective_scan_reference


def make_inputs(batch, length, channels, state, dt_scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, channels, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, channels, generator=g)) * dt_scale
    A = -torch.exp(torch.randn(channels, state, generator=g))
    B = torch.randn(batch, length, state, generator=g)
    C = torch.randn(batch, length, state, generator=g)
    return u, delta, A, B, C


def relative_error(value, reference):
    """Largest absolute error over the largest reference magnitude (per tensor; absolute if 0)."""
    scale = float(reference.abs().max())
    return float((value.double() - reference).abs().max()) / (scale if scale > 0 else 1.0)


@pytest.mark.parametrize(
    "shape,dt_scale",
    [((3, 7, 5, 4), 0.1), ((2, 50, 16, 32), 0.1), ((4, 13, 8, 6), 20.0), ((1, 1, 3, 2), 1.0)],
    ids=["small", "L50", "large-dt-A", "one-step"],
)
def test_cpu_scan_matches_the_float64_oracle_in_values_and_every_gradient(shape, dt_scale):
    inputs = make_inputs(*shape, dt_scale=dt_scale)
    fast = [x.clone().requires_grad_() for x in inputs]
    oracle = [x.double().requires_grad_() for x in inputs]
    grad_out = torch.randn(shape[:3], generator=torch.Generator().manual_seed(1))
    y_fast = selective_scan(*fast, backend="cpu")
    y_ref = selective_scan_reference(*oracle)
    y_fast.backward(grad_out)
    y_ref.backward(grad_out.double())
    assert relative_error(y_fast.detach(), y_ref.detach()) < 1e-6
    for name, a, b in zip(("u", "delta", "A", "B", "C"), fast, oracle):
        assert relative_error(a.grad, b.grad) < 1e-6, name


def test_large_decays_stay_finite():
    u, delta, A, B, C = make_inputs(2, 9, 4, 4, dt_scale=1.0)
    delta = delta * 1000  # |Δ·A| in the thousands: exp underflows to 0, never to NaN
    y = selective_scan(u, delta, A, B, C, backend="cpu")
    assert torch.isfinite(y).all()
    assert torch.allclose(y, selective_scan_reference(u, delta, A, B, C), atol=1e-4, rtol=1e-4)


def test_scan_is_causal():
    u, delta, A, B, C = make_inputs(2, 12, 4, 6)
    y = selective_scan(u, delta, A, B, C, backend="cpu")
    u2, B2 = u.clone(), B.clone()
    u2[:, 8:] = torch.randn(2, 4, 4)
    B2[:, 8:] = torch.randn(2, 4, 6)
    y2 = selective_scan(u2, delta, A, B2, C, backend="cpu")
    assert torch.equal(y[:, :8], y2[:, :8])
    assert not torch.allclose(y[:, 8:], y2[:, 8:])


def test_auto_backend_choice_and_bad_backends():
    u = torch.zeros(1, 2, 3)
    assert resolve_backend("auto", u) == "cpu"
    assert resolve_backend("auto", u.double()) == "reference"
    with pytest.raises(ValueError, match="'cpu' needs float32"):
        resolve_backend("cpu", u.double())
    with pytest.raises(ValueError, match="'cuda' needs CUDA tensors"):
        resolve_backend("cuda", u)
    with pytest.raises(ValueError, match="'fast' is not one of"):
        resolve_backend("fast", u)
    with pytest.raises(ValueError, match="needs A <= 0"):
        selective_scan(u, torch.ones(1, 2, 3), torch.ones(3, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2), "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scan_matches_the_oracle():
    pytest.importorskip("mamba_ssm", reason="the optional mamba-ssm package is not installed")
    inputs = [x.cuda() for x in make_inputs(2, 33, 16, 8)]
    y = selective_scan(*inputs, backend="cuda")
    y_ref = selective_scan_reference(*[x.double() for x in inputs])
    assert relative_error(y, y_ref) < 1e-5


def test_an_explicit_backend_that_cannot_run_on_the_device_is_named():
    from recbole_hymoe.nn.scan import backend_problem

    assert backend_problem("auto", "cuda") is None and backend_problem("reference", "cuda") is None
    assert backend_problem("cpu", "cpu") is None
    assert backend_problem("cpu", "cuda") == ("the 'cpu' scan runs on CPU tensors with numba: "
                                              "use 'auto' or 'cuda' on a GPU")
    assert "needs a CUDA device and the mamba-ssm package" in backend_problem("cuda", "cpu")
