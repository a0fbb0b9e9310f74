"""The race's arms, from the finished trials of a search: the baselines (the one with the best
proxy score is the incumbent), the best distinct searched curricula by a noise-aware proxy score
(the challengers), the incumbent at the best challenger's learning rate, the student alone (the
reference); and the race's budgets and seeds. See :mod:`curriculum_search.search.selection` for
the whole stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.baselines import STUDENT_ONLY, student_only_choice
from curriculum_search.search.encoding import CurriculumChoice, choice_from_dict
from curriculum_search.search.race import Arm, RaceSettings, Role
from curriculum_search.search.space import SearchSpace, SelectionConfig


@dataclass(frozen=True)
class Candidate:
    """An arm of the race and the curriculum it trains."""

    arm: Arm
    choice: CurriculumChoice


# -- the shortlist ---------------------------------------------------------------------------------
def proxy_score(trial: FrozenTrial, window: float) -> float:
    """Noise-aware proxy score of a finished trial.

    The mean of its evaluations in the last ``window`` fraction of its iterations, the final one
    included (each already the mean over ``proxy.seeds``). Every trial of a study trains the same
    number of iterations and is evaluated at the same steps, so the window holds the same
    evaluations for every curriculum, whatever its stages; :func:`shortlist` sets it to half the
    minimum stage fraction, so it lies in the second half of every curriculum's last stage and
    never holds an evaluation right after a stage switch (where AdamW restarts and the curve dips).

    The window is the same for every curriculum on purpose. The rule before it averaged the final
    AP with "the last evaluation in the second half of the last stage": for a one-stage curriculum
    that was an evaluation two thirds into a still-rising proxy curve, for most two-stage ones
    there was none, so one-stage curricula scored about a quarter low and the shortlist passed
    over them (evidence, pvt_retina64: a one-stage CWD curriculum with the best final proxy AP,
    0.0176, scored 0.0126 and lost its place to a two-stage one at 0.0147).
    """
    assert trial.value is not None
    values = [float(trial.value)]
    steps = trial.intermediate_values
    bounds = trial.user_attrs.get(A.STAGE_BOUNDARIES) or []
    total = bounds[-1] if bounds else max(steps, default=0)
    values += [float(v) for s, v in steps.items() if total * (1 - window) <= s < total]
    return sum(values) / len(values)


def shortlist(space: SearchSpace, study: optuna.Study, cfg: SelectionConfig) -> list[Candidate]:
    """The race's arms, from the finished trials of the search study.

    The incumbent is the baseline with the best proxy score; the challengers the
    ``cfg.shortlist`` best distinct searched curricula (none equal to a baseline); with
    ``cfg.lr_matched`` also the incumbent at the best challenger's learning rate; every other
    distinct baseline that distils, as a challenger; the references
    are the student alone at the incumbent's learning rate and (``cfg.lr_matched``) at the best
    challenger's.

    Raises:
        StudyError: no baseline has finished yet.
    """
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if A.CURRICULUM in t.user_attrs and t.value is not None
    ]
    by_key: dict[str, FrozenTrial] = {}
    for t in sorted(done, key=lambda t: t.number):
        key = t.user_attrs.get(A.CURRICULUM_KEY) or choice_from_dict(t.user_attrs[A.CURRICULUM]).key
        prev = by_key.get(key)
        if prev is None or (t.user_attrs.get(A.BASELINE) and not prev.user_attrs.get(A.BASELINE)):
            by_key[key] = t  # a baseline keeps its label when a searched trial repeats it
    baselines = {k: t for k, t in by_key.items() if t.user_attrs.get(A.BASELINE)}
    if not baselines:
        raise StudyError(f"study {study.study_name!r}: no baseline has finished; run the search first")
    window = space.search.min_stage_fraction / 2  # inside every curriculum's last stage's second half
    scores = {k: proxy_score(t, window) for k, t in by_key.items()}
    inc_key = max(baselines, key=lambda k: (scores[k], -baselines[k].number))

    def baseline_arm(key: str, role: Role) -> Candidate:
        t = baselines[key]
        name = str(t.user_attrs[A.BASELINE])
        arm = Arm(key, name, role, baseline=name, source_trial=t.number, proxy_score=scores[key])
        return Candidate(arm, choice_from_dict(t.user_attrs[A.CURRICULUM]))

    incumbent = baseline_arm(inc_key, "incumbent")
    searched = sorted(
        (k for k in by_key if k not in baselines), key=lambda k: (-scores[k], by_key[k].number)
    )[: cfg.shortlist]
    out = [incumbent]
    for k in searched:
        t = by_key[k]
        out.append(
            Candidate(
                Arm(k, f"trial #{t.number}", "challenger", source_trial=t.number, proxy_score=scores[k]),
                choice_from_dict(t.user_attrs[A.CURRICULUM]),
            )
        )
    if cfg.lr_matched and searched:
        lr = out[1].choice.lr
        if abs(lr / incumbent.choice.lr - 1) > 1e-3:
            matched = dataclasses.replace(incumbent.choice, lr=lr)
            out.append(
                Candidate(
                    Arm(
                        matched.key,
                        f"{incumbent.arm.label} @ lr {lr:.3g}",
                        "challenger",
                        baseline=incumbent.arm.baseline,
                        source_trial=incumbent.arm.source_trial,
                    ),
                    matched,
                )
            )
    # every other distinct baseline that distils races too, as a challenger: the proxy ranks the
    # baselines no better than it ranks anything (short, single seed), and what ships must be at
    # least as good as each curriculum a user would pick by hand, not only the one the proxy liked
    # (a proxy-best weak->strong no better than the student alone, or the student alone itself,
    # would otherwise be the only bar). The student alone is the reference (or the incumbent).
    others = sorted(
        (k for k, t in baselines.items() if k != inc_key and t.user_attrs.get(A.BASELINE) != STUDENT_ONLY),
        key=lambda k: (-scores[k], baselines[k].number),
    )
    out += [baseline_arm(k, "challenger") for k in others]
    # the student alone at the incumbent's learning rate and (lr_matched) the best challenger's:
    # "what distillation buys" compares the shipped student with the student alone at the shipped
    # student's own learning rate (another challenger that wins is reported with a note)
    sb = next((t for k, t in baselines.items() if t.user_attrs.get(A.BASELINE) == STUDENT_ONLY), None)
    rates = [incumbent.choice.lr] + ([out[1].choice.lr] if cfg.lr_matched and searched else [])
    for lr in dict.fromkeys(rates):
        alone = dataclasses.replace(student_only_choice(space), lr=lr)
        if alone.key in {c.arm.key for c in out}:
            continue  # an arm of the race is that student alone already
        default = abs(lr / student_only_choice(space).lr - 1) <= 1e-3
        out.append(
            Candidate(
                Arm(
                    alone.key,
                    "student alone" if default else f"student alone @ lr {lr:.3g}",
                    "reference",
                    baseline=STUDENT_ONLY,
                    source_trial=sb.number if sb and default else None,
                    proxy_score=scores.get(alone.key),
                ),
                alone,
            )
        )
    return out


def race_settings(space: SearchSpace, base_seed: int) -> RaceSettings:
    """Budgets (iterations) and seeds of each rung; rung ``r`` uses seeds ``base .. base+n_r-1``."""
    cfg = space.selection
    budgets = tuple(max(1, round(f * space.full.iterations)) for f in cfg.rungs)
    seeds = tuple(tuple(base_seed + i for i in range(n)) for n in cfg.seeds)
    return RaceSettings(budgets, seeds, cfg.promote, cfg.margin, cfg.confidence)
