"""Warm-up schedules ``w(t)``: pure functions of the optimizer step, rising from 0 to 1."""

import math

import torch

SCHEDULES = ("linear", "cosine")


def warmup_weight(step, warmup_steps, schedule="linear"):
    """Return the warm-up weight ``w(t)`` of HyMoERec's fusion ``α = σ(a) · w(t)``.

    ``linear``: ``w(t) = min(1, t / T)``; ``cosine``: ``w(t) = (1 - cos(π · min(1, t / T))) / 2``.
    Both are 0 at t = 0, 1 for t ≥ T and monotone; ``T = 0`` disables warm-up (``w = 1``).

    Args:
        step (int or LongTensor): t, optimizer steps taken so far (scalar tensor stays on device).
        warmup_steps (int): T ≥ 0.
        schedule (str): one of :data:`SCHEDULES`.

    Returns:
        float or FloatTensor: w(t), a tensor when ``step`` is one.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    is_tensor = torch.is_tensor(step)
    if warmup_steps == 0:
        return torch.ones((), device=step.device) if is_tensor else 1.0
    ratio = (step.float() / warmup_steps).clamp(max=1.0) if is_tensor else min(1.0, step / warmup_steps)
    if schedule == "linear":
        return ratio
    if is_tensor:
        return (1.0 - torch.cos(math.pi * ratio)) / 2.0
    return (1.0 - math.cos(math.pi * ratio)) / 2.0
