"""Mamba mixer: causality, padding, RoPE's relative-position property, backends, bad settings."""

import pytest
import torch

from recbole_hymoe.nn.mamba import MambaMixer
from recbole_hymoe.nn.rope import apply_rope, rope_angles
from recbole_hymoe.nn.scan import selective_scan_reference


@pytest.mark.parametrize("rope_target", ["none", "bc", "input"])
def test_mixer_is_causal_so_right_padding_cannot_reach_earlier_positions(rope_target):
    mixer = MambaMixer(16, d_state=8, rope_target=rope_target).eval()
    x = torch.randn(2, 10, 16)
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 4, 16)
    with torch.no_grad():
        assert torch.allclose(mixer(x)[:, :6], mixer(changed)[:, :6], atol=1e-6)
        assert torch.allclose(mixer(x[:, :6]), mixer(x)[:, :6], atol=1e-6)  # a shorter padded batch


def test_cpu_and_reference_backends_give_the_same_mixer():
    mixer = MambaMixer(16, d_state=8, rope_target="bc").eval()
    x = torch.randn(3, 9, 16)
    with torch.no_grad():
        fast = mixer(x)
        mixer.scan_backend = "reference"
        assert torch.allclose(mixer(x), fast, atol=1e-5)


def impulse_kernel(A, b, c, delta, t, s, length=12):
    """Response at time t to a unit input at time s, B_t = R(t) b, C_t = R(t) c, constant Δ."""
    angles = rope_angles(length, b.numel())
    B = apply_rope(b.expand(1, length, -1), angles)
    C = apply_rope(c.expand(1, length, -1), angles)
    u = torch.zeros(1, length, 1, dtype=torch.float64)
    u[0, s, 0] = 1.0
    y = selective_scan_reference(u, torch.full_like(u, delta), A, B, C)
    return float(y[0, t, 0])


def test_rope_on_b_and_c_with_tied_pairs_depends_on_relative_position_only():
    torch.manual_seed(0)
    b, c = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    tied = -torch.tensor([[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]], dtype=torch.float64)
    assert impulse_kernel(tied, b, c, 0.3, 5, 2) == pytest.approx(impulse_kernel(tied, b, c, 0.3, 9, 6), rel=1e-12)
    assert impulse_kernel(tied, b, c, 0.3, 7, 7) == pytest.approx(impulse_kernel(tied, b, c, 0.3, 3, 3), rel=1e-12)
    untied = -torch.arange(1.0, 9.0, dtype=torch.float64).unsqueeze(0)
    assert impulse_kernel(untied, b, c, 0.3, 5, 2) != pytest.approx(impulse_kernel(untied, b, c, 0.3, 9, 6), rel=1e-6)


def test_bc_rope_ties_a_within_pairs():
    mixer = MambaMixer(16, d_state=8, rope_target="bc")
    assert mixer.A_log.shape == (32, 4)
    assert mixer.A()[0].tolist() == pytest.approx([-1.0, -1.0, -2.0, -2.0, -3.0, -3.0, -4.0, -4.0])
    assert MambaMixer(16, d_state=8).A()[0].tolist() == pytest.approx([-float(k) for k in range(1, 9)])


def test_bad_mixer_settings_are_refused():
    with pytest.raises(ValueError, match="rope_target='both'"):
        MambaMixer(16, rope_target="both")
    with pytest.raises(ValueError, match="d_state=7 must be even"):
        MambaMixer(16, d_state=7, rope_target="bc")


def test_mamba_initialisation_of_the_step_size():
    mixer = MambaMixer(64, d_state=16)
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6  # log-uniform in [1e-3, 1e-1], floored
    assert torch.equal(mixer.D.data, torch.ones(128))
