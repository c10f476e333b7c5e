"""Small statistics shared by experiments (pure)."""
from __future__ import annotations

import math


def percentile(values, p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100); None for no values."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    k = (len(data) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] if lo == hi else data[lo] + (data[hi] - data[lo]) * (k - lo)


def pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None
