"""Statistics of a side-by-side comparison: mean ± std over seeds, relative gain, paired Wilcoxon."""

import math

import numpy as np
from scipy import stats


def mean_std(values):
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of ``values``."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def relative_gain(value, reference):
    """``(value - reference) / reference`` on means (NaN when the reference is 0)."""
    return (value - reference) / reference if reference else math.nan


def paired_wilcoxon(a, b):
    """Two-sided Wilcoxon signed-rank test of paired per-user values ``a`` vs ``b``.

    Pairs whose difference is 0 are dropped (scipy's ``zero_method='wilcox'``), the usual choice
    for ranking metrics where most users tie at 0.

    Returns:
        float: the p-value (1.0 when every pair ties).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    if not np.any(a != b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
