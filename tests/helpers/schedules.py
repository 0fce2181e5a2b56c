"""Closed forms of the LR schedules, to check the torch schedulers (and a real run's logged lr) against."""

from __future__ import annotations

import math


def cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * pct))


def onecycle(t: int, total: int, max_lr: float, pct_start: float = 0.3, div: float = 25.0,
             final_div: float = 1e4) -> float:
    """Smith's one-cycle with cosine phases: initial -> max_lr by step pct_start*total - 1, then -> min."""
    initial, peak_step = max_lr / div, pct_start * total - 1
    if t <= peak_step:
        return cos_anneal(initial, max_lr, t / peak_step)
    return cos_anneal(max_lr, initial / final_div, (t - peak_step) / (total - 1 - peak_step))
