"""Warm-up schedules w(t)."""

import pytest
import torch

from recbole_hymoe.nn.schedules import warmup_weight


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_warmup_ends_and_monotone(schedule):
    values = [warmup_weight(t, 100, schedule) for t in range(0, 151)]
    assert values[0] == 0.0
    assert values[100] == 1.0 and values[150] == 1.0
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_warmup_midpoints():
    assert warmup_weight(25, 100, "linear") == pytest.approx(0.25)
    assert warmup_weight(50, 100, "cosine") == pytest.approx(0.5)
    assert warmup_weight(25, 100, "cosine") == pytest.approx((1 - 2**-0.5) / 2)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_warmup_tensor_and_number_agree(schedule):
    for t in (0, 7, 60, 100, 400):
        tensor_value = warmup_weight(torch.tensor(t), 80, schedule)
        assert torch.is_tensor(tensor_value)
        assert tensor_value.item() == pytest.approx(warmup_weight(t, 80, schedule), abs=1e-6)


def test_zero_warmup_disables_it():
    assert warmup_weight(0, 0) == 1.0
    assert warmup_weight(torch.tensor(0), 0).item() == 1.0


def test_bad_schedule_and_steps():
    with pytest.raises(ValueError, match="schedule='step'"):
        warmup_weight(1, 10, "step")
    with pytest.raises(ValueError, match="warmup_steps=-1"):
        warmup_weight(1, -1)
