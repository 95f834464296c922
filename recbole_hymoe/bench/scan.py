"""Selective-scan benchmark: the package's CPU scan against mambapy's parallel scan.

Times one forward + backward of every input (u, Δ, A, B, C) at a given shape, for each thread
count, interleaving the implementations over rounds (median reported), and checks the package's
scan against the float64 sequential oracle (largest absolute error over the largest reference
magnitude, for the output and each gradient). mambapy is a benchmark-only dependency.
"""

import json
import statistics
import time
from pathlib import Path

import psutil
import torch

from recbole_hymoe.nn import scan as scan_module
from recbole_hymoe.utils import PeakRSS, write_atomic

INPUT_NAMES = ("u", "delta", "A", "B", "C")


def make_inputs(batch, length, channels, state, seed=0):
    """Random scan inputs with Mamba's value ranges (Δ = softplus(·)·0.1, A = -exp(·))."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, length, channels, generator=g),
        torch.nn.functional.softplus(torch.randn(batch, length, channels, generator=g)) * 0.1,
        -torch.exp(torch.randn(channels, state, generator=g)),
        torch.randn(batch, length, state, generator=g),
        torch.randn(batch, length, state, generator=g),
    )


def mambapy_scan(u, delta, A, B, C):
    """The same scan through mambapy 1.2.0's parallel scan (materialises [B, L, D, N])."""
    from mambapy.pscan import pscan

    decay = torch.exp(delta.unsqueeze(-1) * A)  # [B, L, D, N]
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [B, L, D, N]
    states = pscan(decay, drive)
    return (states @ C.unsqueeze(-1)).squeeze(-1)  # [B, L, D]


def _fwd_bwd(function, inputs, grad_out):
    leaves = [x.clone().requires_grad_() for x in inputs]
    start = time.perf_counter()
    function(*leaves).backward(grad_out)
    return time.perf_counter() - start, leaves


def _relative_error(value, reference):
    scale = float(reference.abs().max())
    return float((value.double() - reference).abs().max()) / (scale if scale > 0 else 1.0)


def run_scan_benchmark(batch=256, length=50, channels=128, state=32, threads=(1, 2), rounds=3, out_dir=None):
    """Time the package's CPU scan and mambapy's parallel scan; return (and write) the report."""
    inputs = make_inputs(batch, length, channels, state)
    grad_out = torch.randn(batch, length, channels, generator=torch.Generator().manual_seed(1))
    ours = lambda *x: scan_module.selective_scan(*x, backend="cpu")  # noqa: E731
    start = time.perf_counter()
    _, leaves = _fwd_bwd(ours, inputs, grad_out)  # first use: compile or load the cached kernels
    first_call_s = time.perf_counter() - start

    oracle = [x.double().requires_grad_() for x in inputs]
    reference = scan_module.selective_scan_reference(*oracle)
    reference.backward(grad_out.double())
    with torch.no_grad():
        output = ours(*inputs)
    errors = {"y": _relative_error(output, reference.detach())}
    errors.update({f"d{name}": _relative_error(a.grad, b.grad) for name, a, b in zip(INPUT_NAMES, leaves, oracle)})

    rows = []
    saved_threads = torch.get_num_threads()
    try:
        for count in threads:
            torch.set_num_threads(count)
            timings = {"recbole_hymoe cpu scan": [], "mambapy pscan": []}
            peaks = {name: 0 for name in timings}
            for function, name in ((ours, "recbole_hymoe cpu scan"), (mambapy_scan, "mambapy pscan")):
                _fwd_bwd(function, inputs, grad_out)  # warm-up at this thread count
            for _ in range(rounds):
                for function, name in ((ours, "recbole_hymoe cpu scan"), (mambapy_scan, "mambapy pscan")):
                    before = psutil.Process().memory_info().rss
                    with PeakRSS() as memory:
                        seconds, _ = _fwd_bwd(function, inputs, grad_out)
                    timings[name].append(seconds)
                    peaks[name] = max(peaks[name], memory.peak - before)
            reference_s = statistics.median(timings["mambapy pscan"])
            for name, values in timings.items():
                median = statistics.median(values)
                rows.append({"threads": count, "implementation": name, "fwd_bwd_s": median,
                             "speedup_vs_mambapy": reference_s / median, "rss_rise_gb": peaks[name] / 2**30})
    finally:
        torch.set_num_threads(saved_threads)
    report = {
        "shape": {"B": batch, "L": length, "D": channels, "N": state},
        "rounds": rounds,
        "first_call_s": first_call_s,
        "max_relative_error_vs_float64": errors,
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "scan.json", json.dumps(report, indent=2))
        write_atomic(out_dir / "scan.md", scan_table(report))
    return report


def scan_table(report):
    """Markdown table of a :func:`run_scan_benchmark` report."""
    shape = report["shape"]
    errors = ", ".join(f"{k} {v:.1e}" for k, v in report["max_relative_error_vs_float64"].items())
    lines = [
        f"Selective scan, forward + backward of all inputs, B={shape['B']} L={shape['L']} D={shape['D']} "
        f"N={shape['N']} (median of {report['rounds']} rounds). Max relative error vs float64: {errors}. "
        f"First call in the process (kernel compile or cache load): {report['first_call_s']:.1f} s.",
        "",
        "| threads | implementation | fwd+bwd s | speed-up vs mambapy | RSS rise GB |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(f"| {row['threads']} | {row['implementation']} | {row['fwd_bwd_s']:.3f} | "
                     f"{row['speedup_vs_mambapy']:.1f}× | {row['rss_rise_gb']:.2f} |")
    return "\n".join(lines) + "\n"
