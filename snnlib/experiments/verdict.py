"""One rule that decides every result claim: ``holds``, ``does not hold`` or ``inconclusive``.

A claim is judged by an interval, never by a point estimate alone:

- a **threshold** claim (``mean >= x``) by the t-based 95% interval of the mean over seeds;
- a **comparison** (``A better than B``) by the interval of the mean difference A - B, paired
  seed by seed when both arms share their seeds (Welch's interval otherwise);
- a **parity** claim (``A within m of B``) by the same interval against the margin [-m, m];
- a **deterministic** measurement (an operation count, an energy estimate, a ratio of exact
  byte counts) by its value, and it says so.

``holds`` when the whole interval lies on the claimed side (inside the margin for parity),
``does not hold`` when it lies wholly on the other side (wholly outside the margin),
``inconclusive at this budget`` otherwise, including when a single seed gives no interval.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from scipy import stats

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive at this budget"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
DIRECTIONS = (">=", ">", "<=", "<")


@dataclass(frozen=True)
class Verdict:
    """The decision on one claim and the numbers behind it.

    ``estimate``: the mean (threshold) or mean difference (comparison, parity), or the value
    (deterministic); ``interval``: its ``confidence`` interval, ``None`` when it cannot be formed
    (one seed) or is not needed (deterministic); ``n``: seeds (pairs when paired).
    """
    verdict: str
    statistic: str            # 'mean', 'paired difference', 'unpaired difference', 'deterministic'
    estimate: float
    interval: tuple | None
    n: int
    confidence: float = 0.95
    rule: str = ""            # the condition for 'holds', in words
    extra: dict = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return self.verdict == HOLDS

    def as_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d


def _values(xs, what: str) -> list[float]:
    vals = [float(x) for x in xs]
    if not vals:
        raise ValueError(f"{what}: no values to decide on")
    if any(not math.isfinite(v) for v in vals):
        raise ValueError(f"{what}: non-finite value in {vals}")
    return vals


def mean_interval(xs, confidence: float = 0.95) -> tuple[float, tuple | None]:
    """Mean of ``xs`` and its two-sided t interval (``None`` for fewer than two values)."""
    vals = _values(xs, "mean_interval")
    n = len(vals)
    m = sum(vals) / n
    if n < 2:
        return m, None
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return m, (m - half, m + half)


def difference_interval(a, b, *, paired: bool, confidence: float = 0.95) -> tuple[float, tuple | None, int]:
    """Mean of A - B with its t interval and the number of seeds (pairs).

    Paired: ``a[i]`` and ``b[i]`` share seed i (equal lengths). Unpaired: Welch's interval."""
    a, b = _values(a, "arm A"), _values(b, "arm B")
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired comparison needs one B per A seed, got {len(a)} and {len(b)}")
        m, ci = mean_interval([x - y for x, y in zip(a, b)], confidence)
        return m, ci, len(a)
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    if na < 2 or nb < 2:
        return ma - mb, None, min(na, nb)
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return ma - mb, (ma - mb, ma - mb), min(na, nb)
    dof = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
    return ma - mb, (ma - mb - half, ma - mb + half), min(na, nb)


def _side(lo: float, hi: float, threshold: float, direction: str) -> str:
    """Verdict of an interval [lo, hi] against ``value <direction> threshold``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if direction == ">=":
        return HOLDS if lo >= threshold else FAILS if hi < threshold else INCONCLUSIVE
    if direction == ">":
        return HOLDS if lo > threshold else FAILS if hi <= threshold else INCONCLUSIVE
    if direction == "<=":
        return HOLDS if hi <= threshold else FAILS if lo > threshold else INCONCLUSIVE
    return HOLDS if hi < threshold else FAILS if lo >= threshold else INCONCLUSIVE


def decide_threshold(values, threshold: float, direction: str = ">=", *, confidence: float = 0.95) -> Verdict:
    """``mean(values) <direction> threshold``, judged by the t interval of the mean over seeds."""
    m, ci = mean_interval(values, confidence)
    rule = f"{confidence:.0%} interval of the mean {direction} {threshold:g}"
    v = INCONCLUSIVE if ci is None else _side(ci[0], ci[1], threshold, direction)
    return Verdict(v, "mean", m, ci, len(values), confidence, rule)


def decide_comparison(a, b, *, direction: str = ">", offset: float = 0.0, paired: bool = True,
                      confidence: float = 0.95) -> Verdict:
    """``A - B <direction> offset`` (default: A better than B), judged by the interval of A - B."""
    m, ci, n = difference_interval(a, b, paired=paired, confidence=confidence)
    stat = "paired difference" if paired else "unpaired difference"
    rule = f"{confidence:.0%} interval of A - B {direction} {offset:g}"
    v = INCONCLUSIVE if ci is None else _side(ci[0], ci[1], offset, direction)
    return Verdict(v, stat, m, ci, n, confidence, rule)


def decide_parity(a, b, margin: float, *, paired: bool = True, confidence: float = 0.95) -> Verdict:
    """``|A - B| <= margin``: holds when the interval of A - B lies inside [-margin, margin],
    does not hold when it lies wholly outside it."""
    if margin < 0:
        raise ValueError(f"parity margin must be >= 0, got {margin}")
    m, ci, n = difference_interval(a, b, paired=paired, confidence=confidence)
    stat = "paired difference" if paired else "unpaired difference"
    rule = f"{confidence:.0%} interval of A - B inside [-{margin:g}, {margin:g}]"
    if ci is None:
        v = INCONCLUSIVE
    elif -margin <= ci[0] and ci[1] <= margin:
        v = HOLDS
    elif ci[0] > margin or ci[1] < -margin:
        v = FAILS
    else:
        v = INCONCLUSIVE
    return Verdict(v, stat, m, ci, n, confidence, rule)


def decide_value(value: float, threshold: float, direction: str = ">=") -> Verdict:
    """A deterministic measurement (no seed spread): decided by its value."""
    value = _values([value], "decide_value")[0]
    v = _side(value, value, threshold, direction)
    return Verdict(v, "deterministic", value, None, 1, 1.0, f"value {direction} {threshold:g} (deterministic)")


def decide_all(parts) -> Verdict:
    """One verdict for a claim made of several parts (a dict name -> Verdict, or a sequence).

    ``holds`` when every part holds, ``does not hold`` when any part does not, ``inconclusive``
    otherwise. The statistic, estimate and interval are those of the first part whose verdict is
    the claim's; every part is kept in ``extra["parts"]``.
    """
    named = dict(parts) if isinstance(parts, dict) else {str(i + 1): v for i, v in enumerate(parts)}
    if not named:
        raise ValueError("decide_all needs at least one part")
    for name, v in named.items():
        if not isinstance(v, Verdict):
            raise TypeError(f"part {name!r} is a {type(v).__name__}, not a Verdict")
    kinds = [v.verdict for v in named.values()]
    verdict = FAILS if FAILS in kinds else HOLDS if all(k == HOLDS for k in kinds) else INCONCLUSIVE
    d = next(v for v in named.values() if v.verdict == verdict)
    rule = "; ".join(f"{n}: {v.rule}" for n, v in named.items())
    return Verdict(verdict, d.statistic, d.estimate, d.interval, d.n, d.confidence, rule,
                   {"parts": {n: v.as_dict() for n, v in named.items()}})
