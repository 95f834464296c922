"""Selective scan of Mamba-1 (Gu & Dao, arXiv 2312.00752, Algorithm 2 / eq. 2a-2b):

    h_t = exp(Δ_t ⊙ A) ⊙ h_{t-1} + (Δ_t ⊙ x_t) B_t,      y_t = h_t C_t          (per channel d)

with h_t ∈ R^{D×N}. One API, :func:`selective_scan`, three implementations:

- ``reference``: a sequential PyTorch loop, any dtype; the test oracle.
- ``cpu``: compiled kernels (numba) for float32 CPU tensors. Forward and backward run per
  (sequence, channel) over time with the N-wide state in registers/L1 and a vectorised
  ``exp``, so the [B, L, D, N] state tensor is never materialised; the backward pass recomputes
  the states of one channel at a time and runs the adjoint recurrence in reverse time.
  Reductions over channels (dB, dC) are per sequence (no write races), over sequences (dA) per
  sequence then summed.
- ``cuda``: ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` for CUDA tensors when
  the optional ``mamba-ssm`` package is installed (it accepts externally rotated B and C).

``auto`` picks ``cuda`` for CUDA tensors (if available), ``cpu`` for float32 CPU tensors and
``reference`` otherwise. Written by hand because no maintained library offers a CPU selective
scan with a backward pass that does not materialise the state (mambapy's parallel scan does).

The compiled kernels are built on first use and cached on disk (numba ``cache=True``), so only
the first run on a machine pays the compile (see :func:`warm_up`).

Glossary: B batch, L length, D channels (expand·hidden), N state size.
"""

import os

import numpy as np
import torch

BACKENDS = ("auto", "reference", "cpu", "cuda")

try:  # the CPU kernels need numba (a runtime dependency); import errors surface on use
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is in requirements.txt
    numba = None
else:
    # numba's default OpenMP layer leaves its threads spinning after a kernel; they then starve
    # PyTorch's own threads (measured: a small torch op went from 0.05 ms to 15 ms on 2 cores).
    # The workqueue layer's threads sleep. An explicit NUMBA_THREADING_LAYER still wins.
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def selective_scan_reference(u, delta, A, B, C):
    """Sequential selective scan (the oracle).

    Args:
        u (Tensor): [B, L, D] input x.
        delta (Tensor): [B, L, D] step sizes Δ (> 0, after softplus).
        A (Tensor): [D, N] state matrix (diagonal per channel, negative).
        B (Tensor): [B, L, N] input projection per step.
        C (Tensor): [B, L, N] output projection per step.

    Returns:
        Tensor: [B, L, D], ``y_t = Σ_n C_t[n] h_t[d, n]``.
    """
    batch, length, channels = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])
    outputs = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        outputs.append((h * C[:, t, None, :]).sum(-1))  # [B, D, N] -> [B, D]
    return torch.stack(outputs, dim=1)


if numba is not None:

    @njit(fastmath=True, inline="always", cache=True)
    def _exp_nonpositive(x):  # pragma: no cover - compiled
        """exp(x) for x ≤ 0 in float32 (relative error ≤ 1.3e-7), vectorisable by LLVM.

        Range reduction x = n·ln2 + r, |r| ≤ ln2/2 (Cody-Waite split of ln2), degree-7 Taylor
        polynomial for e^r, and 2^n assembled from its exponent bits; below -87 the result is
        the smallest normal float (≈ 1.6e-38), i.e. 0 for every practical purpose.
        """
        x = max(x, np.float32(-87.0))
        n = np.int32(x * np.float32(1.4426950408889634) - np.float32(1.5)) + np.int32(1)
        nf = np.float32(n)
        r = x - nf * np.float32(0.693145751953125) - nf * np.float32(1.428606765330187e-06)
        p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (
            np.float32(0.16666666666666666) + r * (np.float32(0.041666666666666664) + r * (
                np.float32(0.008333333333333333) + r * (np.float32(0.001388888888888889)
                                                        + r * np.float32(0.0001984126984126984)))))))
        return p * np.int32((n + np.int32(127)) << np.int32(23)).view(np.float32)

    # The per-step loops over the state live in small inlined helpers taking 1-D row views: with
    # the rows as separate arguments LLVM vectorises them (measured 2.8× faster backward than the
    # same loops written on 2-D indices inside the kernel).

    @njit(fastmath=True, inline="always", cache=True)
    def _forward_step(h_prev, h_now, decay_row, a_row, b_row, dt, dx):  # pragma: no cover - compiled
        """h_now = exp(Δ A) ⊙ h_prev + Δ x B, keeping exp(Δ A) in ``decay_row``."""
        for n in range(h_prev.shape[0]):
            e = _exp_nonpositive(dt * a_row[n])
            decay_row[n] = e
            h_now[n] = e * h_prev[n] + dx * b_row[n]

    @njit(fastmath=True, inline="always", cache=True)
    def _output_step(h, a_row, b_row, c_row, dt, dx):  # pragma: no cover - compiled
        """Advance h in place and return y = C · h."""
        acc = np.float32(0.0)
        for n in range(h.shape[0]):
            hn = _exp_nonpositive(dt * a_row[n]) * h[n] + dx * b_row[n]
            h[n] = hn
            acc += c_row[n] * hn
        return acc

    @njit(fastmath=True, inline="always", cache=True)
    def _reverse_step(g, c_row, h_now, h_prev, decay_row, b_row, a_row, da, db_row, dc_row,  # pragma: no cover
                      gy, dt, x):
        """One adjoint step; ``g`` enters as ∂loss/∂h_t from t+1 and leaves as ∂loss/∂h_{t-1}.

        Returns (∂loss/∂Δ_t through the decay, Σ_n g_n B_n) for this channel.
        """
        d_decay = np.float32(0.0)
        d_drive = np.float32(0.0)
        for n in range(g.shape[0]):
            gn = g[n] + c_row[n] * gy  # ∂loss/∂h_t
            dc_row[n] += gy * h_now[n]
            e = decay_row[n]
            gh = gn * h_prev[n] * e  # ∂loss/∂(Δ_t A_n)
            d_decay += gh * a_row[n]
            da[n] += gh * dt
            db_row[n] += gn * dt * x
            d_drive += gn * b_row[n]
            g[n] = gn * e
        return d_decay, d_drive

    @njit(parallel=True, fastmath=True, cache=True)
    def _scan_forward(u, delta, A, Bm, Cm, y):  # pragma: no cover - compiled
        batch, length, channels = u.shape
        for b in prange(batch):
            h = np.zeros(A.shape[1], dtype=np.float32)
            for d in range(channels):
                h[:] = 0.0
                a_row = A[d]
                for t in range(length):
                    dt = delta[b, t, d]
                    y[b, t, d] = _output_step(h, a_row, Bm[b, t], Cm[b, t], dt, dt * u[b, t, d])

    @njit(parallel=True, fastmath=True, cache=True)
    def _scan_backward(u, delta, A, Bm, Cm, grad_y, du, ddelta, dA_part, dB, dC):  # pragma: no cover
        batch, length, channels = u.shape
        state = A.shape[1]
        for b in prange(batch):
            hs = np.zeros((length + 1, state), dtype=np.float32)  # h_0 … h_L of one channel
            decay = np.zeros((length, state), dtype=np.float32)  # exp(Δ_t A) of one channel
            g = np.zeros(state, dtype=np.float32)
            da = np.zeros(state, dtype=np.float32)
            db = np.zeros((length, state), dtype=np.float32)  # summed over channels
            dc = np.zeros((length, state), dtype=np.float32)
            for d in range(channels):
                a_row = A[d]
                for t in range(length):
                    dt = delta[b, t, d]
                    _forward_step(hs[t], hs[t + 1], decay[t], a_row, Bm[b, t], dt, dt * u[b, t, d])
                g[:] = 0.0
                da[:] = 0.0
                for t in range(length - 1, -1, -1):
                    dt = delta[b, t, d]
                    x = u[b, t, d]
                    d_decay, d_drive = _reverse_step(g, Cm[b, t], hs[t + 1], hs[t], decay[t], Bm[b, t], a_row,
                                                     da, db[t], dc[t], grad_y[b, t, d], dt, x)
                    ddelta[b, t, d] = d_decay + d_drive * x
                    du[b, t, d] = d_drive * dt
                dA_part[b, d, :] = da
            dB[b] = db
            dC[b] = dc


def _numpy(tensor):
    return tensor.detach().contiguous().numpy()


class _CPUSelectiveScan(torch.autograd.Function):
    """Autograd wrapper of the compiled CPU kernels (float32)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        ctx.save_for_backward(u, delta, A, B, C)
        y = np.empty(u.shape, dtype=np.float32)
        with _numba_threads():
            _scan_forward(_numpy(u), _numpy(delta), _numpy(A), _numpy(B), _numpy(C), y)
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C = ctx.saved_tensors
        batch, length, channels = u.shape
        du = np.empty((batch, length, channels), dtype=np.float32)
        ddelta = np.empty_like(du)
        dA_part = np.empty((batch, channels, A.shape[1]), dtype=np.float32)
        dB = np.empty(B.shape, dtype=np.float32)
        dC = np.empty(C.shape, dtype=np.float32)
        with _numba_threads():
            _scan_backward(_numpy(u), _numpy(delta), _numpy(A), _numpy(B), _numpy(C), _numpy(grad_y),
                           du, ddelta, dA_part, dB, dC)
        dA = torch.from_numpy(dA_part.sum(0, dtype=np.float64).astype(np.float32))
        return torch.from_numpy(du), torch.from_numpy(ddelta), dA, torch.from_numpy(dB), torch.from_numpy(dC)


class _numba_threads:
    """Run numba kernels with as many threads as PyTorch uses (both default to the cores)."""

    def __enter__(self):
        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        numba.set_num_threads(self.previous)


def _mamba_ssm_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def backend_problem(backend, device):
    """Why an explicit ``backend`` cannot run on ``device`` (a torch device or its name), or None."""
    on_cuda = torch.device(device).type == "cuda"
    if backend == "cpu" and (on_cuda or numba is None):
        return "the 'cpu' scan runs on CPU tensors with numba" + (": use 'auto' or 'cuda' on a GPU" if on_cuda else "")
    if backend == "cuda" and (not on_cuda or _mamba_ssm_scan() is None):
        return "the 'cuda' scan needs a CUDA device and the mamba-ssm package: use 'auto'"
    return None


def resolve_backend(backend, u):
    """Return the implementation ``auto`` stands for with input ``u`` (or check an explicit one).

    Raises:
        ValueError: unknown backend, or one that cannot run on ``u``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"scan backend {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        if u.is_cuda and _mamba_ssm_scan() is not None:
            return "cuda"
        if u.device.type == "cpu" and u.dtype == torch.float32 and numba is not None:
            return "cpu"
        return "reference"
    if backend == "cpu" and (u.device.type != "cpu" or u.dtype != torch.float32 or numba is None):
        raise ValueError("scan backend 'cpu' needs float32 CPU tensors and numba")
    if backend == "cuda" and (not u.is_cuda or _mamba_ssm_scan() is None):
        raise ValueError("scan backend 'cuda' needs CUDA tensors and the mamba-ssm package")
    return backend


def selective_scan(u, delta, A, B, C, backend="auto"):
    """Selective scan ``y_t = C_t · h_t``, ``h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_t`` (h_0 = 0).

    Args:
        u (Tensor): [B, L, D] input x.
        delta (Tensor): [B, L, D] step sizes Δ > 0 (softplus already applied).
        A (Tensor): [D, N] negative diagonal state matrix.
        B (Tensor): [B, L, N].
        C (Tensor): [B, L, N].
        backend (str): one of :data:`BACKENDS`.

    Returns:
        Tensor: [B, L, D]; differentiable in every input.
    """
    backend = resolve_backend(backend, u)
    if backend == "cpu":
        if bool((A > 0).any()):
            raise ValueError("the CPU selective scan needs A <= 0 (A = -exp(A_log))")
        return _CPUSelectiveScan.apply(u, delta, A, B, C)
    if backend == "cuda":
        scan = _mamba_ssm_scan()
        y = scan(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.contiguous(),
                 B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous())  # [B, D, L] layout
        return y.transpose(1, 2)
    return selective_scan_reference(u, delta, A, B, C)


def warm_up():
    """Compile (or load from the on-disk cache) the CPU kernels now rather than on first use.

    The first call on a machine compiles them (≈ 20 s on 2 cores); numba caches the result next
    to this module, so later processes only load it (≈ 1 s). ``run/setup_env.sh`` calls this.
    """
    if numba is None:
        return
    u = torch.zeros(1, 2, 1, requires_grad=True)
    y = selective_scan(u, torch.ones(1, 2, 1), -torch.ones(1, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2),
                       backend="cpu")
    y.sum().backward()


__all__ = ["BACKENDS", "resolve_backend", "selective_scan", "selective_scan_reference", "warm_up"]
