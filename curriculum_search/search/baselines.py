"""The baselines enqueued at the start of every study.

"Student without KD, direct KD from the strongest teacher, teachers ordered weak→strong by AP, and
the order given by the adaptation-cost heuristic." The three curricula are encoded with
:func:`~curriculum_search.search.encoding.encode_curriculum` into the study's full, fixed parameter
set, with these method settings (:func:`~curriculum_search.search.encoding.default_settings`, each
moved to the nearest value the space allows): feature KD ``mgd`` × 1, response KD on (gated, class
and box weights 1, temperature 2), pseudo labels off, linear decay with floor 0.1, learning rate the
geometric mean of ``search.lr``, equal stage lengths.

Enqueue them with ``study.enqueue_trial(params, user_attrs={"baseline": name})``.

**The student-only baseline** is returned as ``None``: it is encodable only in a space that
allows no KD at all (a no-KD curriculum decodes to it, see
:func:`~curriculum_search.search.encoding.choice_from_settings`), and must run in every space. Its run is :meth:`CurriculumChoice.student_only(space.proxy.iterations, lr)
<curriculum_search.search.encoding.CurriculumChoice.student_only>` (build its recipe with
:func:`~curriculum_search.search.encoding.build_recipe` like any other choice). The objective must
treat it specially: the trial carries the user attribute ``baseline="student_only"`` and does not
decode a curriculum from its parameters. Do **not** enqueue it as a trial *without* parameters
into the sampled study: on optuna 5.0 a finished trial with no parameters empties the
``IntersectionSearchSpace``, and multivariate TPE and GP then silently fall back to independent
sampling for the rest of the study (checked). Either evaluate it outside the sampler's view (e.g.
once per study, stored as a study user attribute) or enqueue it with a full parameter set
(:func:`student_only_params`) so the parameter set stays intact; the latter lets the sampler see
one misattributed value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from curriculum_search.search.encoding import CurriculumChoice, default_settings, encode_curriculum
from curriculum_search.search.space import SearchSpace

STUDENT_ONLY = "student_only"
DIRECT = "direct_strongest"
WEAK_TO_STRONG = "weak_to_strong"
HEURISTIC = "heuristic"
BASELINES = (STUDENT_ONLY, DIRECT, WEAK_TO_STRONG, HEURISTIC)


def rank_teachers(space: SearchSpace, teacher_ap: Mapping[str, float]) -> list[str]:
    """Searchable teachers from weakest to strongest by AP (ties: by name).

    Raises:
        ValueError: a searchable teacher has no AP.
    """
    missing = [t for t in space.search_teachers if t not in teacher_ap]
    if missing:
        raise ValueError(f"no AP for teacher(s) {', '.join(missing)}")
    return sorted(space.search_teachers, key=lambda t: (float(teacher_ap[t]), t))


def student_only_choice(space: SearchSpace, total_iterations: int | None = None) -> CurriculumChoice:
    """The student-only run: the proxy budget (default), no teacher, the baseline learning rate."""
    total = space.proxy.iterations if total_iterations is None else total_iterations
    return CurriculumChoice.student_only(total, default_settings(space)["lr"])


def student_only_params(space: SearchSpace, teacher_ap: Mapping[str, float]) -> dict[str, Any]:
    """A full parameter set to carry a student-only trial.

    Only for enqueueing the student-only baseline into the sampled study without emptying its
    intersection search space (see the module docstring); the objective ignores these values.
    Where the space allows no KD, these are the student-only curriculum's own parameters (a no-KD
    curriculum at the baseline LR, so the sampler sees a correctly attributed value); otherwise
    the direct-KD baseline's.
    """
    try:
        return encode_curriculum(student_only_choice(space), space)
    except ValueError:  # every curriculum of this space distils
        chain = rank_teachers(space, teacher_ap)[-space.search.n_stages[0] :]
        return encode_curriculum({"teachers": chain}, space)


def baseline_choices(
    space: SearchSpace, teacher_ap: Mapping[str, float], heuristic_order: Sequence[str] | None = None
) -> dict[str, dict[str, Any] | None]:
    """Trial parameters of the study's baselines, by name.

    Returns, in this order:

    * ``student_only``: ``None`` (not encodable; see the module docstring).
    * ``direct_strongest``: one stage with the highest-AP teacher — omitted if the space needs
      at least 2 stages.
    * ``weak_to_strong``: the ``min(max stages, #teachers)`` strongest teachers, weakest first,
      ending at the strongest.
    * ``heuristic``: ``heuristic_order`` (e.g. from
      :func:`~curriculum_search.search.heuristic.heuristic_order`: teachers by student → teacher
      adaptation cost, the strongest last), kept whole even when it has more stages than the
      fewest the space allows; if longer than the most stages, its first ``max − 1`` teachers
      (the cheapest) and its last are kept; omitted when not given or when shorter than the
      fewest stages.

    Baselines that decode to the same curriculum are all returned (a study reuses the result of an
    identical curriculum, so a duplicate costs nothing and keeps its label).

    Args:
        space: the search space.
        teacher_ap: AP of every searchable teacher on the proxy validation set.
        heuristic_order: teacher order of the adaptation-cost heuristic, student side first.

    Raises:
        ValueError: a searchable teacher has no AP, or ``heuristic_order`` names an unknown or
            duplicate teacher.
    """
    ranked = rank_teachers(space, teacher_ap)
    lo, hi = space.search.n_stages
    out: dict[str, dict[str, Any] | None] = {STUDENT_ONLY: None}
    if lo == 1:
        out[DIRECT] = encode_curriculum({"teachers": [ranked[-1]]}, space)
    n = min(hi, len(ranked))
    out[WEAK_TO_STRONG] = encode_curriculum({"teachers": ranked[-n:]}, space)
    if heuristic_order is not None:
        order = list(heuristic_order)
        for t in order:
            if t not in space.search_teachers:
                raise ValueError(
                    f"heuristic order names {t!r}, not a searchable teacher ({', '.join(space.search_teachers)})"
                )
        if len(set(order)) != len(order):
            raise ValueError(f"heuristic order has a teacher twice: {order}")
        if len(order) > hi:
            order = [*order[: hi - 1], order[-1]]
        if len(order) >= lo:
            out[HEURISTIC] = encode_curriculum({"teachers": order}, space)
    return out


def planned_baselines(space: SearchSpace) -> int:
    """How many baseline trials a study of ``space`` enqueues before its first searched trial.

    The count :func:`baseline_choices` returns with a heuristic order over all searchable teachers
    (it is asked with placeholder APs: the count does not depend on them; the heuristic may still
    fail at run time, and the count is then one too high, which only adds one random draw). The
    sampler's ``n_startup_trials`` is counted after these
    (:func:`~curriculum_search.search.samplers.make_sampler`).
    """
    teachers = list(space.search_teachers)
    return len(baseline_choices(space, dict.fromkeys(teachers, 0.0), teachers))


__all__ = [
    "BASELINES",
    "DIRECT",
    "HEURISTIC",
    "STUDENT_ONLY",
    "WEAK_TO_STRONG",
    "baseline_choices",
    "planned_baselines",
    "rank_teachers",
    "student_only_choice",
    "student_only_params",
]
