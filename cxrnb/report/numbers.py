"""Numbers as the reports print them, the one rule by which a difference counts as settled, and the
one extrapolation the reports allow themselves (a curve's tail extended as a power law, labelled so).

Every mean in reports/ carries its spread; a gap between two means is called settled only when it
exceeds twice the spread of the difference, and only when that spread includes training seeds
(``MIN_SEEDS`` of them): a spread over resampled subsets of one trained model says nothing of how much
the model itself changes with its seed, or with the machine's arithmetic, so a sentence never claims
more than a rerun would confirm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3              # training seeds a spread must pool before a gap can be settled
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


ROUND_OFF = 1e-9     # a std this small against its mean is arithmetic noise (equal repeats), not a spread


def fmt(mean: float, std: float) -> str:
    """'12.3 ± 0.45': the std to two significant digits and the mean to the same decimal place;
    below 0.001, '6.28 ± 0.16 × 10⁻⁶'."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if mean != 0 and abs(mean) < 1e-3:     # e.g. FD in a space of tiny features: one shared power of 10
        e = math.floor(math.log10(abs(mean)))
        scaled = fmt(mean / 10 ** e, std / 10 ** e if std is not None else std)
        return f"{scaled} × 10{str(e).translate(SUPERSCRIPT)}"
    if std is None or math.isnan(std) or std <= ROUND_OFF * abs(mean):
        return f"{mean:.4g}"        # no spread, or one of floating-point round-off: repeats that agree
    places = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{places}f} ± {std:.{places}f}"


def count(n: int, noun: str) -> str:
    """'1 training seed', '3 training seeds'."""
    return f"{n} {noun}{'s' * (n != 1)}"


def verdict(a_mean: float, a_std: float, b_mean: float, b_std: float, seeds: int | None = None) -> str:
    """Is a lower than b (lower = better)? Settled only when the gap exceeds twice the spread of the
    difference, sqrt(a_std² + b_std²), and (when ``seeds`` is given: the fewer training seeds behind
    a and b) that spread pools at least ``MIN_SEEDS`` training seeds; one repeat only (no spread) is
    never settled."""
    if seeds is not None and seeds < MIN_SEEDS:
        return f"not resolved: {count(seeds, 'training seed')} (settling needs {MIN_SEEDS})"
    spread = math.hypot(a_std, b_std)
    if math.isnan(spread) or abs(a_mean - b_mean) <= 2 * spread:
        return "not resolved within spread"
    return "holds" if a_mean < b_mean else "reversed"


@dataclass(frozen=True)
class Trend:
    """A curve's tail as a straight line in log FD against log seconds: FD ~ exp(level) * seconds^slope.

    An extrapolation, not a measurement: a power law is the simplest shape that keeps falling more and
    more slowly, as training curves do, and it says nothing of a plateau the run has not reached."""

    level: float
    slope: float
    last: float          # the longest measured budget (seconds) of the points it was fitted to


def trend(seconds, fd, tail: int = 3) -> Trend | None:
    """The line through a curve's last ``tail`` points with seconds > 0 (None with fewer than two)."""
    pairs = [(s, f) for s, f in sorted(zip(seconds, fd)) if s > 0 and f > 0][-tail:]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    slope, level = np.polyfit(x, y, 1)
    return Trend(float(level), float(slope), float(pairs[-1][0]))


def crossing(chaser: Trend, leader: Trend) -> float | None:
    """Seconds at which ``chaser``'s line passes below ``leader``'s, beyond both measured ranges, or
    None when it never does there (its line falls no faster, or they crossed inside the range)."""
    if chaser.slope >= leader.slope:
        return None
    at = math.exp((leader.level - chaser.level) / (chaser.slope - leader.slope))
    return at if at > max(chaser.last, leader.last) else None
