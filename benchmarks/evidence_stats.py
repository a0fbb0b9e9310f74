"""Statistics of the evidence benchmark (issue 16), kept apart from the runs so they are tested alone.

* **Proxy fidelity** over curricula each trained at the proxy budget and at full length on several
  seeds: Kendall τ_b and Spearman ρ between mean proxy AP and mean full AP with percentile bootstrap
  intervals (curricula resampled), the *noise ceiling* (τ_b between the means of two disjoint halves
  of the full-length seeds: how well full length agrees with itself at this seed count), the
  probability that the proxy's best curriculum is the full-length best and the regret of the
  proxy's pick (bootstrap over seeds, each curriculum's seeds resampled).
* **Paired comparisons** of the pipeline's pick with the baselines on common seeds
  (:func:`curriculum_search.search.race.paired_stats`, the race's own rule), the harm rate and the
  goals the figures are held against.

Everything here is pure (lists in, dicts out); ``rng`` seeds make the bootstraps reproducible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curriculum_search.search.race import paired_stats, pooled_seed_std

BOOTSTRAP = 2000


def _mean(v: Sequence[float]) -> float:
    return float(sum(v) / len(v))


def kendall_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ_b (ties handled); ``None`` with fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    from scipy.stats import kendalltau

    tau = float(kendalltau(x, y).statistic)
    return None if math.isnan(tau) else tau


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); ``None`` like :func:`kendall_b`."""
    if len(x) != len(y) or len(x) < 3:
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


def bootstrap_interval(
    x: Sequence[float],
    y: Sequence[float],
    stat: Any,
    confidence: float = 0.9,
    n: int = BOOTSTRAP,
    rng: int = 0,
) -> list[float] | None:
    """Percentile interval of ``stat(x, y)`` over curricula resampled with replacement (resamples
    where the statistic is undefined, e.g. all one curriculum, are dropped)."""
    gen = np.random.default_rng(rng)
    k = len(x)
    if k < 3:
        return None
    vals = []
    for _ in range(n):
        idx = gen.integers(0, k, k)
        v = stat([x[i] for i in idx], [y[i] for i in idx])
        if v is not None:
            vals.append(v)
    if len(vals) < n // 2:
        return None
    lo, hi = np.quantile(vals, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def noise_ceiling(full: Sequence[Sequence[float]]) -> float | None:
    """Mean τ_b between the curricula's mean full AP over two disjoint halves of their seeds, over
    every split into halves (sizes ⌊s/2⌋ and the rest): the agreement of the full length with itself
    at this seed count, the ceiling a proxy's τ is read against."""
    s = min(len(v) for v in full)
    if s < 2:
        return None
    taus = []
    for half in itertools.combinations(range(s), s // 2):
        rest = [i for i in range(s) if i not in half]
        a = [_mean([v[i] for i in half]) for v in full]
        b = [_mean([v[i] for i in rest]) for v in full]
        t = kendall_b(a, b)
        if t is not None:
            taus.append(t)
    return _mean(taus) if taus else None


def _argmax(v: Sequence[float]) -> int:
    return int(np.argmax(np.asarray(v)))


def pick_quality(
    proxy: Sequence[Sequence[float]],
    full: Sequence[Sequence[float]],
    confidence: float = 0.9,
    n: int = BOOTSTRAP,
    rng: int = 0,
) -> dict[str, Any]:
    """Is the proxy's best curriculum (highest mean proxy AP) the full-length best?

    Observed: whether it is, and its regret (best mean full AP − the pick's). Bootstrap (each
    curriculum's proxy and full seeds resampled with replacement, independently): the probability
    that the proxy's best is the full-length best, and the mean regret with its percentile interval.
    """
    pm = [_mean(v) for v in proxy]
    fm = [_mean(v) for v in full]
    pick = _argmax(pm)
    gen = np.random.default_rng(rng)
    hits, regrets = 0, []
    for _ in range(n):
        p = [_mean([v[i] for i in gen.integers(0, len(v), len(v))]) for v in proxy]
        f = [_mean([v[i] for i in gen.integers(0, len(v), len(v))]) for v in full]
        k = _argmax(p)
        hits += int(k == _argmax(f))
        regrets.append(max(f) - f[k])
    lo, hi = np.quantile(regrets, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "proxy_pick": pick,
        "full_best": _argmax(fm),
        "pick_is_best": pick == _argmax(fm),
        "regret": max(fm) - fm[pick],
        "p_best": hits / n,
        "regret_bootstrap_mean": float(np.mean(regrets)),
        "regret_interval": [float(lo), float(hi)],
    }


def fidelity(
    proxy: Sequence[Sequence[float]], full: Sequence[Sequence[float]], confidence: float = 0.9
) -> dict[str, Any]:
    """Every fidelity figure of one task (see the module docstring); inputs: per curriculum, its
    proxy APs and its full-length APs over seeds."""
    pm = [_mean(v) for v in proxy]
    fm = [_mean(v) for v in full]
    return {
        "n_curricula": len(pm),
        "seeds": min(len(v) for v in full),
        "kendall_tau_b": kendall_b(pm, fm),
        "kendall_tau_b_interval": bootstrap_interval(pm, fm, kendall_b, confidence),
        "spearman_rho": spearman(pm, fm),
        "spearman_rho_interval": bootstrap_interval(pm, fm, spearman, confidence),
        "noise_ceiling_tau_b": noise_ceiling(full),
        "full_seed_std": pooled_seed_std({str(i): v for i, v in enumerate(full)}),
        "proxy_seed_std": pooled_seed_std({str(i): v for i, v in enumerate(proxy)}),
        **pick_quality(proxy, full, confidence),
        "confidence": confidence,
    }


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.9) -> dict[str, Any]:
    """``a − b`` on common seeds: n, mean, sd, interval and the race's words."""
    st = paired_stats(a, b, confidence)
    return {**st.as_dict(), "words": st.words()}


def across_repeats(diffs: Sequence[float], confidence: float = 0.9) -> dict[str, Any]:
    """Mean of the per-repeat mean differences with a t interval over the repeats (each repeat of the
    pipeline is one independent draw: its search, its race)."""
    return paired(list(diffs), [0.0] * len(diffs), confidence)


def goals(
    tasks: Mapping[str, Mapping[str, Any]], gain: float = 0.01, harm_max: float = 0.10
) -> dict[str, Any]:
    """The issue's goals, each with whether the figures meet it (``None``: not measured)."""

    def never_worse(t: Mapping[str, Any]) -> bool | None:
        d = (t.get("pipeline") or {}).get("vs_best_baseline") or {}
        std = t.get("seed_std")
        if d.get("mean") is None or not d.get("interval") or std is None:
            return None
        return bool(d["mean"] >= 0 and d["interval"][0] >= -std)

    def beats_by(t: Mapping[str, Any]) -> bool | None:
        d = (t.get("pipeline") or {}).get("vs_best_baseline") or {}
        if d.get("mean") is None or not d.get("interval"):
            return None
        return bool(d["mean"] >= gain and d["interval"][0] > 0)

    def harm_ok(t: Mapping[str, Any]) -> bool | None:
        h = (t.get("pipeline") or {}).get("harm_rate")
        return None if h is None else bool(h <= harm_max)

    def tau_given(t: Mapping[str, Any]) -> bool | None:
        f = t.get("fidelity") or {}
        return bool(f.get("kendall_tau_b") is not None and f.get("kendall_tau_b_interval"))

    def kd_signal(t: Mapping[str, Any]) -> bool | None:
        h = t.get("headline") or {}
        ratios = [r for r in (h.get("kd_gain_mean_to_sd") or {}).values() if r is not None]
        best = h.get("best_curriculum_vs_student_alone") or {}
        if best.get("ratio_mean_to_sd") is not None:
            ratios.append(best["ratio_mean_to_sd"])
        return None if not ratios else bool(max(ratios) >= 5.0)

    per = {
        name: {
            "kd_gain_at_least_5_paired_sd": kd_signal(t),
            "never_worse_than_best_baseline": never_worse(t),
            "harm_rate_at_most_10pct": harm_ok(t),
            f"beats_best_baseline_by_{gain}": beats_by(t),
            "kendall_tau_with_interval": tau_given(t),
        }
        for name, t in tasks.items()
    }

    def every(key: str) -> bool | None:
        vals = [p[key] for p in per.values()]
        return None if not vals or any(v is None for v in vals) else all(vals)

    return {
        "per_task": per,
        "kd_gain_at_least_5_paired_sd_on_every_task": every("kd_gain_at_least_5_paired_sd"),
        "never_worse_on_every_task": every("never_worse_than_best_baseline"),
        "harm_rate_at_most_10pct_on_every_task": every("harm_rate_at_most_10pct"),
        f"beats_by_{gain}_on_some_task": any(bool(p[f"beats_best_baseline_by_{gain}"]) for p in per.values()),
        "tau_with_interval_on_every_task": every("kendall_tau_with_interval"),
    }


__all__ = [
    "across_repeats",
    "bootstrap_interval",
    "fidelity",
    "goals",
    "kendall_b",
    "noise_ceiling",
    "paired",
    "pick_quality",
    "spearman",
]
