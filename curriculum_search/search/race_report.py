"""The race's decision as JSON values (``status --json``, ``full/metrics.json``): the winner, the
fidelity diagnostics of the proxy, the report-split comparison with the best baseline and the
student alone; and the same in plain words. See :mod:`curriculum_search.search.selection`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.arms import Candidate
from curriculum_search.search.attrs import DECISION, selection_study_name
from curriculum_search.search.race import PairedStats, RacePlan, kendall_tau, paired_stats, pooled_seed_std
from curriculum_search.search.space import SearchSpace
from curriculum_search.search.storage import StorageSpec, load_study_readonly

#: Kendall τ at or below which the proxy is said to have carried no information.
TAU_WARNING = 0.2


def _report_values(
    study: optuna.Study, key: str, iterations: int, seeds: tuple[int, ...]
) -> list[float] | None:
    by_seed: dict[int, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if a.get(A.ARM_KEY) == key and a.get(A.ITERATIONS) == iterations and A.REPORT_AP in a:
            by_seed[int(a[A.SEED])] = float(a[A.REPORT_AP])
    vals = [by_seed.get(s) for s in seeds]
    return None if any(v is None for v in vals) else [float(v) for v in vals if v is not None]


def _interval(st: PairedStats | None) -> list[float] | None:
    return (
        [float(st.lo), float(st.hi)] if st is not None and st.lo is not None and st.hi is not None else None
    )


def summary(
    space: SearchSpace, study: optuna.Study, plan: RacePlan, cands: Mapping[str, Candidate]
) -> dict[str, Any]:
    """The decision, the fidelity diagnostics and the report-split comparison, as JSON values."""
    assert plan.winner is not None and plan.incumbent is not None
    cfg = space.selection
    winner, inc = plan.winner, plan.incumbent
    last = plan.rungs[-1]
    sel_split, rep_split = space.split_names()
    if plan.winner_stats is not None:
        delta, interval = plan.winner_stats.mean, _interval(plan.winner_stats)
    else:  # the incumbent stays: it is compared with itself
        delta, interval = 0.0, [0.0, 0.0]
    rivals = [k for k in last.stats if cands[k].arm.role == "challenger" and cands[k].arm.baseline is None]
    best_rival = max(rivals, key=lambda k: last.stats[k].mean) if rivals else None
    # fidelity: proxy score vs the race's first-rung mean, over the arms that ran there
    first = plan.rungs[0]
    pairs = [
        (cands[k].arm.proxy_score, sum(v) / len(v))
        for k, v in first.values.items()
        if cands[k].arm.proxy_score is not None
    ]
    tau = kendall_tau([p[0] for p in pairs if p[0] is not None], [p[1] for p in pairs if p[0] is not None])
    seed_std = pooled_seed_std(last.values)
    warnings = []
    if tau is None or tau <= TAU_WARNING:
        warnings.append(
            "the proxy carried no information about the race's ranking"
            + (f" (Kendall τ {tau:.2f})" if tau is not None else " (too few raced curricula for τ)")
        )
    if rivals and all(
        not last.stats[k].clears(cfg.margin) and not last.stats[k].clearly_worse() for k in rivals
    ):
        warnings.append("every challenger at the full length was within noise of the best baseline")
    # the report split: the same seeds, paired
    seeds = last.seeds
    rep = {k: _report_values(study, k, last.iterations, seeds) for k in last.values}
    alone_key = _student_alone_key(cands, winner.key, last.values)
    final: dict[str, Any] = {"split": rep_split, "seeds": len(seeds), "ap": None}
    w_rep = rep.get(winner.key)
    if w_rep:
        final.update(ap=w_rep[0], ap_mean=sum(w_rep) / len(w_rep), ap_per_seed=w_rep)

        def versus(key: str | None, name: str) -> None:
            other = rep.get(key) if key else None
            if not other:
                return
            st = paired_stats(w_rep, other, cfg.confidence)
            final[f"{name}_ap"] = sum(other) / len(other)
            final[f"{name}_ap_per_seed"] = other
            final[f"delta_vs_{name}_mean"] = st.mean
            final[f"delta_vs_{name}_interval"] = _interval(st) if key != winner.key else [0.0, 0.0]
            final[f"{name}_words"] = st.words() if key != winner.key else "is"

        final["best_baseline"] = inc.label
        versus(inc.key, "best_baseline")
        versus(alone_key, "student_alone")
        final["lr"] = cands[winner.key].choice.lr
        if alone_key is not None:
            final["student_alone_lr"] = cands[alone_key].choice.lr
    rungs = [
        {
            "iterations": r.iterations,
            "seeds": list(r.seeds),
            "arms": [
                {
                    "key": k,
                    "label": cands[k].arm.label,
                    "role": cands[k].arm.role,
                    "values": r.values.get(k),
                    "mean": (sum(r.values[k]) / len(r.values[k])) if k in r.values else None,
                    "delta_mean": r.stats[k].mean if k in r.stats else None,
                    "delta_interval": _interval(r.stats.get(k)),
                    "fate": r.fate.get(k, cands[k].arm.role),
                }
                for k in sorted(
                    set(r.values) | set(r.fate),
                    key=lambda k: ("incumbent", "challenger", "reference").index(cands[k].arm.role),
                )
            ],
        }
        for r in plan.rungs
    ]
    return {
        "selection": {
            "winner_trial": winner.source_trial,
            "winner_is_baseline": winner.baseline is not None,
            "winner": winner.label,
            "winner_key": winner.key,
            "winner_description": cands[winner.key].choice.describe(),
            "winner_curriculum": cands[winner.key].choice.as_dict(),
            "winner_seed": last.seeds[0],
            "best_baseline": inc.label,
            "proxy_favourite_baseline": next(
                (c.arm.label for c in cands.values() if c.arm.role == "incumbent"), inc.label
            ),
            "delta_ap_mean": delta,
            "delta_ap_interval": interval,
            "best_challenger": cands[best_rival].arm.label if best_rival else None,
            "best_challenger_delta_mean": last.stats[best_rival].mean if best_rival else None,
            "best_challenger_delta_interval": _interval(last.stats[best_rival]) if best_rival else None,
            "seeds": len(seeds),
            "budget_iterations": last.iterations,
            "margin": cfg.margin,
            "confidence": cfg.confidence,
            "reason": plan.reason,
            "split": sel_split,
            "rungs": rungs,
        },
        "fidelity": {
            "kendall_tau": tau,
            "n": len(pairs),
            "seed_std": seed_std,
            "warnings": warnings,
        },
        "final": final,
    }


def _student_alone_key(
    cands: Mapping[str, Candidate], winner: str, raced: Mapping[str, Sequence[float]]
) -> str | None:
    """The raced student-only arm to report the shipped student against: the one at the shipped
    student's learning rate (the winner itself when it distils nothing), else the default one."""
    alone = [k for k in raced if cands[k].choice.is_student_only]
    lr = cands[winner].choice.lr
    same = [k for k in alone if abs(cands[k].choice.lr / lr - 1) <= 1e-3]
    if same:
        return winner if winner in same else same[0]
    refs = [k for k in alone if cands[k].arm.role == "reference"]
    pick = refs or alone
    return pick[0] if pick else None


def decision_lines(s: Mapping[str, Any]) -> list[str]:
    """The decision in plain words (CLI and ``status``): "beats" only outside the noise."""
    sel, fid, fin = s["selection"], s["fidelity"], s["final"]
    lines = []
    iv = sel.get("best_challenger_delta_interval")
    fav = sel.get("proxy_favourite_baseline")
    if sel["winner_is_baseline"] and sel["winner"] == sel["best_baseline"]:
        if sel.get("best_challenger"):
            lines.append(
                f"selection: ships the best baseline {sel['best_baseline']!r}: the best challenger "
                f"{sel['best_challenger']} is within noise of it ({_fmt_delta(sel['best_challenger_delta_mean'], iv)}, "
                f"{sel['seeds']} seeds, {sel['budget_iterations']} iterations, {sel['split']} split)"
                if not (iv and iv[1] < 0)
                else f"selection: ships the best baseline {sel['best_baseline']!r}: the best challenger "
                f"{sel['best_challenger']} is worse ({_fmt_delta(sel['best_challenger_delta_mean'], iv)}, {sel['seeds']} seeds)"
            )
        else:
            lines.append(
                f"selection: ships the best baseline {sel['best_baseline']!r} (no challenger reached the full length)"
            )
    else:
        lines.append(
            f"selection: {sel['winner']} beats the best baseline {sel['best_baseline']!r} by "
            f"{_fmt_delta(sel['delta_ap_mean'], sel['delta_ap_interval'])} AP "
            f"({sel['seeds']} seeds, {sel['budget_iterations']} iterations, {sel['split']} split)"
        )
    if fav and fav != sel["best_baseline"]:
        lines.append(
            f"  best baseline: the best mean of the raced baselines on the race's seeds (the proxy ranked {fav!r} first)"
        )
    tau = fid.get("kendall_tau")
    std = fid.get("seed_std")
    lines.append(
        f"fidelity: Kendall τ proxy vs race {'n/a' if tau is None else f'{tau:.2f}'} over {fid['n']} curricula; "
        f"seed-to-seed std {'n/a' if std is None else f'{std:.4f}'} AP"
    )
    for w in fid.get("warnings", []):
        lines.append(f"warning: {w}")
    if fin.get("ap") is not None:
        lines.append(
            f"shipped student: AP {fin['ap']:.4f} on the held-out {fin['split']} split "
            f"(mean {fin['ap_mean']:.4f} over {fin['seeds']} seeds)"
        )
        for name, what in (
            ("best_baseline", f"best baseline {fin.get('best_baseline')!r}"),
            ("student_alone", "student alone"),
        ):
            if f"{name}_ap" not in fin:
                continue
            words = fin[f"{name}_words"]
            if words == "is":
                lines.append(
                    f"  it is the {what} (AP {fin[f'{name}_ap']:.4f})"
                    + (": the shipped curriculum distils nothing" if name == "student_alone" else "")
                )
                continue
            lines.append(
                f"  vs {what} (AP {fin[f'{name}_ap']:.4f}): {_fmt_delta(fin[f'delta_vs_{name}_mean'], fin[f'delta_vs_{name}_interval'])}"
                f" — {_words(words, what)}"
            )
            a_lr, lr = fin.get("student_alone_lr"), fin.get("lr")
            if name == "student_alone" and a_lr and lr and abs(a_lr / lr - 1) > 1e-3:
                lines.append(
                    f"    (the student alone trained at lr {a_lr:.3g}, the shipped student at lr {lr:.3g}: "
                    "the difference is not distillation alone)"
                )
    return lines


def _words(words: str, what: str) -> str:
    return {
        "beats": f"beats the {what}",
        "is worse than": f"worse than the {what}",
        "is within noise of": "within noise",
    }[words]


def _fmt_delta(mean: float | None, interval: list[float] | None) -> str:
    if mean is None:
        return "n/a"
    if not interval:
        return f"{mean:+.4f}"
    return f"{mean:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]"


def load_decision(spec: StorageSpec, name: str) -> dict[str, Any] | None:
    """The stored decision of study ``name``'s selection, if a race has finished."""
    try:
        study = load_study_readonly(spec, selection_study_name(name))
    except StudyError:
        return None
    d = study.user_attrs.get(DECISION)
    return d if isinstance(d, dict) else None
