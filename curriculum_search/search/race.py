"""The selection race, as pure decisions on score tables (no training, no storage).

Arms are curricula: challengers from the search's shortlist, the baselines (the *incumbent*, the
one the proxy ranks first, and the others) and the student alone as a reference. Every arm of a
rung trains with the same seeds (common random numbers: same seeds, same data order, same
evaluation images); a challenger is compared through the *paired* differences of its per-seed AP.
At each rung but the last a searched challenger is compared with the incumbent: one whose interval
lies wholly below zero is dropped (clearly worse) and at most ``promote`` of the rest, best mean
difference first, go on. The other baselines and the reference run at the last rung only (full
length, ≥ 2 seeds), where the baseline with the best mean over the common seeds is the bar — the
best baseline, measured by the race rather than by the single-seed proxy — and a searched
challenger replaces it only when the lower bound of its interval clears ``margin``; with several
survivors the confidence is Bonferroni-corrected and the best mean among those that clear wins.
Everything here is a function of the finished runs, so a race resumes by re-planning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Literal

Role = Literal["challenger", "incumbent", "reference"]
#: A run of the race: (arm key, iterations, seed).
RunKey = tuple[str, int, int]


@dataclass(frozen=True)
class RaceSettings:
    """The race's knobs (the space file's ``selection`` block gives them).

    Attributes:
        budgets: iterations of each rung, increasing; the last is the full length.
        seeds: seeds of each rung (each arm of a rung trains on all of them).
        promote: challengers that go on from a rung to the next (not the last rung).
        margin: AP a challenger must beat the incumbent by, at the confidence bound.
        confidence: two-sided confidence of the paired-difference intervals.
    """

    budgets: tuple[int, ...]
    seeds: tuple[tuple[int, ...], ...]
    promote: int = 1
    margin: float = 0.0
    confidence: float = 0.9

    def __post_init__(self) -> None:
        if len(self.budgets) != len(self.seeds) or not self.budgets:
            raise ValueError("budgets and seeds need one entry per rung")
        if list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"rung budgets must increase, got {list(self.budgets)}")
        if len(self.seeds[-1]) < 2:
            raise ValueError("the last rung needs at least 2 seeds")


@dataclass(frozen=True)
class Arm:
    """One curriculum in the race.

    Attributes:
        key: identity of the curriculum (its runs are keyed by it).
        label: what a person reads (``trial #7``, ``direct_strongest``, ``student alone``).
        role: ``challenger``, ``incumbent`` (the proxy's favourite baseline) or ``reference`` (student alone).
        baseline: the baseline's name when the arm is one (also for a challenger that is one).
        source_trial: the search trial the curriculum comes from.
        proxy_score: its noise-aware proxy score in the search.
    """

    key: str
    label: str
    role: Role
    baseline: str | None = None
    source_trial: int | None = None
    proxy_score: float | None = None


@dataclass(frozen=True)
class PairedStats:
    """Mean paired difference ``a − b`` over common seeds, with a Student-t interval.

    ``lo``/``hi`` are ``None`` when fewer than 2 pairs exist (no interval can be given).
    """

    n: int
    mean: float
    sd: float | None
    lo: float | None
    hi: float | None
    confidence: float

    def clears(self, margin: float) -> bool:
        """The lower bound lies above ``margin``: ``a`` beats ``b`` at this confidence."""
        return self.lo is not None and self.lo > margin

    def clearly_worse(self) -> bool:
        """The upper bound lies below zero."""
        return self.hi is not None and self.hi < 0

    def words(self, margin: float = 0.0) -> str:
        """Plain words: "beats" only when the interval clears ``margin``."""
        if self.clears(margin):
            return "beats"
        if self.clearly_worse():
            return "is worse than"
        return "is within noise of"

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "interval": [self.lo, self.hi] if self.lo is not None else None,
            "confidence": self.confidence,
        }


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_stats(a: Sequence[float], b: Sequence[float], confidence: float) -> PairedStats:
    """Paired difference ``a[i] − b[i]``: mean, sd and the two-sided ``confidence`` t interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need equal, non-zero lengths (got {len(a)} and {len(b)})")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return PairedStats(n, mean, None, None, None, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedStats(n, mean, sd, mean - half, mean + half, confidence)


@dataclass
class RungResult:
    """What happened at one rung: values per arm, stats against the incumbent (at the last rung: the
    best baseline), each arm's fate."""

    index: int
    iterations: int
    seeds: tuple[int, ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, PairedStats] = field(default_factory=dict)
    fate: dict[str, str] = field(default_factory=dict)


@dataclass
class RacePlan:
    """The race so far: finished rungs, the runs still needed, and the decision once there is one."""

    rungs: list[RungResult]
    pending: list[RunKey]
    winner: Arm | None = None
    incumbent: Arm | None = None
    winner_stats: PairedStats | None = None
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.winner is not None


def plan_race(
    arms: Sequence[Arm],
    settings: RaceSettings,
    results: Mapping[RunKey, float | None],
) -> RacePlan:
    """Given the finished runs (``None`` = the run failed), the runs still needed or the decision.

    The incumbent, the other baselines (challengers with ``baseline`` set) and the reference run
    at the last rung; searched challengers start at the first. At the last rung the baseline with
    the best mean over the common seeds is the bar (the incumbent on ties): a searched challenger
    ships only when its paired interval against the bar clears the margin, else the bar ships.
    A challenger with a failed run is out. A failed incumbent run ends the race without a winner
    (``reason`` says why).

    Raises:
        ValueError: not exactly one incumbent.
    """
    inc = [a for a in arms if a.role == "incumbent"]
    if len(inc) != 1:
        raise ValueError(f"a race needs exactly one incumbent, got {len(inc)}")
    incumbent = inc[0]
    refs = [a for a in arms if a.role == "reference" and a.key != incumbent.key]
    others = [a for a in arms if a.role == "challenger" and a.key != incumbent.key]
    bases = [a for a in others if a.baseline is not None]
    alive = [a for a in others if a.baseline is None]
    rungs: list[RungResult] = []
    last = len(settings.budgets) - 1
    for r, (its, seeds) in enumerate(zip(settings.budgets, settings.seeds)):
        members = [incumbent, *alive] + ([*bases, *refs] if r == last else [])
        needed = [(a.key, its, s) for a in members for s in seeds]
        pending = [k for k in needed if k not in results]
        if pending:
            return RacePlan(rungs, pending, incumbent=incumbent)
        rung = RungResult(r, its, tuple(seeds))
        rungs.append(rung)
        for a in members:
            vals = [results[(a.key, its, s)] for s in seeds]
            if any(v is None for v in vals):
                rung.fate[a.key] = "failed"
                continue
            rung.values[a.key] = [float(v) for v in vals if v is not None]
        if incumbent.key not in rung.values:
            return RacePlan(
                rungs, [], incumbent, incumbent, None, f"a run of the incumbent {incumbent.label} failed"
            )
        bar = incumbent
        if r == last:  # the best baseline on the race's own seeds (the proxy ranks them poorly)
            raced = [incumbent, *(a for a in bases if a.key in rung.values)]
            bar = max(raced, key=lambda a: (fmean(rung.values[a.key]), a is incumbent))
        base = rung.values[bar.key]
        survivors = []
        n_final = max(1, len([a for a in alive if a.key in rung.values]))
        for a in alive:
            if a.key not in rung.values:
                continue
            conf = settings.confidence
            if r == last:  # several comparisons at once: Bonferroni
                conf = 1 - (1 - conf) / n_final
            st = paired_stats(rung.values[a.key], base, conf)
            rung.stats[a.key] = st
            if st.clearly_worse():
                rung.fate[a.key] = "dropped: clearly worse"
            else:
                survivors.append(a)
        for a in [*refs, *bases, incumbent] if r == last else refs:
            if a.key in rung.values and a.key != bar.key:
                rung.stats[a.key] = paired_stats(rung.values[a.key], base, settings.confidence)
                if a.baseline is not None and a.role != "reference":
                    rung.fate[a.key] = "baseline"
        if r < last:
            survivors.sort(key=lambda a: (-rung.stats[a.key].mean, a.key))
            for a in survivors[settings.promote :]:
                rung.fate[a.key] = "dropped: not among the best"
            alive = survivors[: settings.promote]
            for a in alive:
                rung.fate[a.key] = "promoted"
            continue
        rung.fate[bar.key] = "best baseline"
        winners = [a for a in survivors if rung.stats[a.key].clears(settings.margin)]
        for a in survivors:
            rung.fate[a.key] = "within noise" if a not in winners else "beats the best baseline"
        if winners:
            # every winner cleared the bar: ship the best expected AP (not the tightest interval,
            # which would prefer a small, steady gain over a large one)
            best = max(winners, key=lambda a: (rung.stats[a.key].mean, rung.stats[a.key].lo or 0.0))
            rung.fate[best.key] = "winner"
            return RacePlan(rungs, [], best, bar, rung.stats[best.key], "its interval clears the margin")
        why = (
            "no challenger reached the last rung"
            if not survivors
            else "no challenger's interval clears the margin"
        )
        if bar is not incumbent:
            why += f"; {bar.label} has the best mean of the baselines on the race's seeds"
        return RacePlan(rungs, [], bar, bar, None, why)
    raise AssertionError("unreachable")  # pragma: no cover


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ_b between two score lists (``None`` with fewer than 3 pairs or no variation)."""
    if len(x) != len(y) or len(x) < 3:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(x, y).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def pooled_seed_std(values: Mapping[str, Sequence[float]]) -> float | None:
    """Seed-to-seed standard deviation pooled over arms (each with ≥ 2 seeds)."""
    num, dof = 0.0, 0
    for vals in values.values():
        n = len(vals)
        if n < 2:
            continue
        m = sum(vals) / n
        num += sum((v - m) ** 2 for v in vals)
        dof += n - 1
    return math.sqrt(num / dof) if dof else None


__all__ = [
    "Arm",
    "PairedStats",
    "RacePlan",
    "RaceSettings",
    "RunKey",
    "RungResult",
    "kendall_tau",
    "paired_stats",
    "plan_race",
    "pooled_seed_std",
    "t_quantile",
]
