"""Statistics of a side-by-side comparison: mean ± std over seeds, relative gain, paired Wilcoxon,
Welch's t over runs."""

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


def welch_t(a, b):
    """Two-sided Welch t-test of two groups of run-level values (e.g. each seed's test NDCG@10).

    The run-level companion of :func:`paired_wilcoxon`: pooling users of several runs into one
    paired test treats them as independent and leaves out the run-to-run variance (initial
    weights, dropout masks, data order), so a difference that is only a run-level draw can still
    come out "significant" there.

    Returns:
        float: the p-value; NaN with fewer than two values in a group or no variance at all.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
