"""Fixed-dimension curriculum encoding: every sampler, exact budgets, round trips, keys, recipes, baselines."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from curriculum_search.curriculum.recipe import load_recipe, save_recipe
from curriculum_search.search.baselines import (
    DIRECT,
    HEURISTIC,
    STUDENT_ONLY,
    WEAK_TO_STRONG,
    baseline_choices,
    student_only_choice,
    student_only_params,
)
from curriculum_search.search.encoding import (
    CurriculumChoice,
    build_recipe,
    choice_from_dict,
    choice_from_settings,
    decode_params,
    default_settings,
    encode_curriculum,
    floor_fractions,
    grid_search_space,
    param_distributions,
    proxy_cost,
    split_iterations,
    suggest_curriculum,
    zoo_checkpoint_path,
)
from curriculum_search.search.space import SearchSpace, load_space, make_sampler
from tests.helpers import trial_params

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    """The shipped default with the budgets these hand-computed expectations assume (the shipped
    budgets are tuned for CPU time and may change)."""
    shipped = load_space(REPO / "tests" / "spaces" / "three_teachers.yaml")
    return dataclasses.replace(
        shipped,
        proxy=dataclasses.replace(shipped.proxy, iterations=300, eval_every=100, val_subset=96),
        full=dataclasses.replace(shipped.full, iterations=1200),
    )


def _tiny_space(tmp_path: Path, sampler: dict[str, Any] | None = None) -> SearchSpace:
    """Two teachers, 1-2 stages, few choices and fixed weights: a small grid."""
    spec = {"arch": "fcos", "backbone": "resnet10t", "num_classes": 2, "fpn_channels": 32, "image_size": 64}
    data = {
        "name": "tiny",
        "data": {"kind": "synthetic", "image_size": 64},
        "student": {
            "arch": "fcos",
            "backbone": "mobilenetv3_small_050",
            "num_classes": 2,
            "fpn_channels": 16,
            "image_size": 64,
        },
        "teachers": {"a": {"checkpoint": "a.pt"}, "b": {"zoo": {"spec": spec}}},
        "proxy": {"iterations": 20, "eval_every": 10},
        "search": {
            "n_stages": [1, 2],
            "min_stage_fraction": 0.25,
            "feature_losses": ["mgd", "none"],
            "response": [True],
            "decay": ["linear"],
            "feature_weight": [1.0, 1.0],
            "cls_weight": [1.0, 1.0],
            "box_weight": [1.0, 1.0],
            "temperature": [2.0, 2.0],
            "decay_floor": [0.1, 0.1],
            "lr": [0.001, 0.001],
        },
        "sampler": sampler or {"name": "tpe"},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_space(path)


# -- budget splitting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fractions", "total", "minimum", "expected"),
    [
        ([0.5, 0.5], 7, 1, (4, 3)),  # 3.5/3.5: the remainder goes to the earlier stage
        ([0.2, 0.3, 0.5], 10, 1, (2, 3, 5)),
        ([1 / 3, 1 / 3, 1 / 3], 100, 1, (34, 33, 33)),
        ([0.01, 0.99], 100, 15, (15, 85)),
        ([0.0, 0.0, 1.0], 3, 1, (1, 1, 1)),
        ([2.0, 6.0], 8, 1, (2, 6)),  # not normalised: normalised first
    ],
)
def test_split_iterations_by_hand(
    fractions: list[float], total: int, minimum: int, expected: tuple[int, ...]
) -> None:
    assert split_iterations(fractions, total, minimum) == expected


def test_split_iterations_always_sums_exactly() -> None:
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 5)
        total = rng.randint(n, 1000)
        minimum = rng.randint(1, total // n)
        parts = split_iterations([rng.random() for _ in range(n)], total, minimum)
        assert sum(parts) == total
        assert min(parts) >= minimum


def test_split_iterations_refuses_too_few_iterations() -> None:
    with pytest.raises(ValueError, match="cannot split 2 iterations into 3 stages"):
        split_iterations([1, 1, 1], 2)


def test_floor_fractions() -> None:
    assert floor_fractions([0.05, 0.95], 0.15) == pytest.approx([0.15, 0.85])
    assert floor_fractions([0.0, 0.0, 1.0], 0.2) == pytest.approx([0.2, 0.2, 0.6])
    assert floor_fractions([0.0, 0.0], 0.1) == pytest.approx([0.5, 0.5])
    # 0.1 is lifted to 0.3; then 0.2 of the rest (0.7 × 0.2/0.9 = 0.156) is lifted too
    assert floor_fractions([0.1, 0.2, 0.6], 0.3) == pytest.approx([0.3, 0.3, 0.4])
    with pytest.raises(ValueError):
        floor_fractions([1, 1, 1], 0.4)


# -- every sampler runs on the fixed parameter set -------------------------------------------------


def _run(space: SearchSpace, sampler: optuna.samplers.BaseSampler, n: int = 10) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        choice = suggest_curriculum(trial, space)
        assert choice.total_iterations == space.proxy.iterations
        # a no-KD draw is the student alone (no stages, issue 12.1); two-step pseudo labels (12.7)
        # have their two steps instead of teacher stages
        assert sum(s.iterations for s in choice.to_stages()) == space.proxy.iterations
        trial.set_user_attr("key", choice.key)
        return float(len(choice.stages)) + (choice.lr or 0.0) + random.Random(trial.number).random()

    study.optimize(objective, n_trials=n)
    return study


def _assert_fixed_dims(study: optuna.Study, space: SearchSpace, n: int) -> None:
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == n, [t.state for t in study.trials]
    dists = param_distributions(space)
    for t in trials:
        assert t.distributions == dists
    assert optuna.search_space.IntersectionSearchSpace().calculate(study) == dict(sorted(dists.items()))


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_random_and_tpe_samplers(space: SearchSpace, name: str) -> None:
    sampler = (
        optuna.samplers.RandomSampler(seed=0)
        if name == "random"
        else optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=3)
    )
    _assert_fixed_dims(_run(space, sampler), space, 10)


def test_gp_sampler(space: SearchSpace) -> None:
    try:
        sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=4)
    except ImportError as exc:  # pragma: no cover - scipy/torch missing
        pytest.skip(f"GPSampler unavailable: {exc}")
    _assert_fixed_dims(_run(space, sampler), space, 10)


def test_grid_sampler_over_a_tiny_space(tmp_path: Path) -> None:
    space = _tiny_space(tmp_path, {"name": "grid", "params": {"points": 2}})
    grid = grid_search_space(space, points=2)
    # n_stages 2 values, two order keys × 2, two fractions × 2, feature_loss 2, the rest 1 value
    assert math.prod(len(v) for v in grid.values()) == 2 * 4 * 4 * 2
    assert grid["feature_weight"] == [1.0]
    study = _run(space, make_sampler(space))
    _assert_fixed_dims(study, space, 10)


def test_grid_values_override(tmp_path: Path) -> None:
    space = _tiny_space(tmp_path)
    grid = grid_search_space(space, points=3, values={"n_stages": [2]})
    assert grid["n_stages"] == [2] and grid["frac.0"] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        grid_search_space(space, values={"nope": [1]})
    with pytest.raises(ValueError, match="outside"):
        grid_search_space(space, values={"n_stages": [3]})


def test_log_grid_is_log_spaced(space: SearchSpace) -> None:
    grid = grid_search_space(space, points=3)
    assert grid["feature_weight"] == pytest.approx([0.25, 1.0, 4.0])
    assert grid["decay_floor"] == pytest.approx([0.0, 0.25, 0.5])
    assert grid["n_stages"] == [1, 2, 3]


# -- decoding ----------------------------------------------------------------------------------------


def test_decode_by_hand(space: SearchSpace) -> None:
    choice = decode_params(trial_params(space), space)
    # keys: medium 0.1 < pvt 0.5 < small 0.9; fractions 0.2/0.6 -> 25% / 75% of 300
    assert choice.teachers == ("medium", "pvt")
    assert [s.iterations for s in choice.stages] == [75, 225]
    assert (
        choice.describe()
        == "medium(25%) → pvt(75%) | mgd×1.2 resp(cls×0.5 box×2 T2) gate | cosine→0.1 | lr 2e-3"
    )


def test_order_key_ties_break_by_name(space: SearchSpace) -> None:
    p = trial_params(
        space, **{"order_key.small": 0.3, "order_key.medium": 0.3, "order_key.pvt": 0.3, "n_stages": 3}
    )
    assert decode_params(p, space).teachers == ("medium", "pvt", "small")


def test_min_stage_fraction_is_enforced(space: SearchSpace) -> None:
    choice = decode_params(trial_params(space, **{"frac.0": 0.0, "frac.1": 1.0}), space)
    assert [s.iterations for s in choice.stages] == [45, 255]  # 15% of 300


def test_identical_decodes_give_identical_keys(space: SearchSpace) -> None:
    key = decode_params(trial_params(space), space).key
    assert decode_params(trial_params(space), space).key == key
    # parameters the curriculum does not use do not change the key
    assert decode_params(trial_params(space, **{"frac.2": 0.01, "order_key.small": 0.6}), space).key == key
    no_feat = decode_params(trial_params(space, feature_loss="none"), space).key
    assert decode_params(trial_params(space, feature_loss="none", feature_weight=3.0), space).key == no_feat
    const = decode_params(trial_params(space, decay="constant"), space).key
    assert decode_params(trial_params(space, decay="constant", decay_floor=0.4), space).key == const
    # ... used ones do
    assert decode_params(trial_params(space, feature_weight=1.3), space).key != key
    assert decode_params(trial_params(space, **{"frac.0": 0.3}), space).key != key
    assert decode_params(trial_params(space, **{"order_key.small": 0.3}), space).key != key


def test_decode_rejects_missing_or_out_of_range(space: SearchSpace) -> None:
    p = trial_params(space)
    del p["lr"]
    with pytest.raises(ValueError, match="missing curriculum parameter 'lr'"):
        decode_params(p, space)
    with pytest.raises(ValueError, match="n_stages=4"):
        decode_params(trial_params(space, n_stages=4), space)


# -- encoding round trip ----------------------------------------------------------------------------


def test_encode_enqueue_decode_round_trip(space: SearchSpace) -> None:
    sampled = _run(space, optuna.samplers.RandomSampler(seed=1), n=15)
    choices = [decode_params(t.params, space) for t in sampled.trials]
    choices.append(
        choice_from_settings(space, {"teachers": ["pvt", "small", "medium"], "fractions": [0.05, 0.5, 0.45]})
    )
    choices.append(
        choice_from_settings(
            space, {"teachers": ["medium"], "feature_loss": "none", "response": False, "decay": "step"}
        )
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for c in choices:
        study.enqueue_trial(encode_curriculum(c, space))
    keys: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        keys.append(suggest_curriculum(trial, space).key)
        return 0.0

    study.optimize(objective, n_trials=len(choices))
    assert keys == [c.key for c in choices]


def test_encode_plain_settings_and_errors(space: SearchSpace) -> None:
    params = encode_curriculum({"teachers": ["small", "pvt"], "fractions": [1, 3], "lr": 0.001}, space)
    choice = decode_params(params, space)
    assert choice.teachers == ("small", "pvt")
    assert [s.iterations for s in choice.stages] == [75, 225]
    assert choice.lr == 0.001 and choice.feature_loss == "mgd" and choice.response
    with pytest.raises(ValueError, match="not searchable"):
        encode_curriculum({"teachers": ["huge"]}, space)
    with pytest.raises(ValueError, match=r"outside search\.n_stages"):
        encode_curriculum({"teachers": []}, space)
    with pytest.raises(ValueError, match=r"lr 0\.1 is outside"):
        encode_curriculum({"teachers": ["small"], "lr": 0.1}, space)
    with pytest.raises(ValueError, match="unknown curriculum setting 'color'"):
        encode_curriculum({"teachers": ["small"], "color": "red"}, space)


def test_student_only_is_encodable_only_where_no_kd_is(space: SearchSpace, tmp_path: Path) -> None:
    # the default space allows no KD: a no-KD curriculum on the fewest stages carries it
    params = encode_curriculum(student_only_choice(space), space)
    assert decode_params(params, space) == student_only_choice(space)
    assert student_only_params(space, AP) == params
    tiny = _tiny_space(tmp_path)  # response KD is always on: every curriculum distils
    with pytest.raises(ValueError, match="student-only curriculum is not in this space"):
        encode_curriculum(student_only_choice(tiny), tiny)
    carrier = decode_params(student_only_params(tiny, {"a": 0.2, "b": 0.1}), tiny)
    assert carrier.teachers == ("a",) and carrier.distills  # the direct-KD carrier


def test_no_kd_curricula_decode_to_the_student_only_curriculum(space: SearchSpace) -> None:
    """Issue 12.1: teachers without any KD term are the student alone with LR restarts."""
    baseline = student_only_choice(space)
    no_kd = {"feature_loss": "none", "response": False, "pseudo": False, "lr": baseline.lr}
    variants = [
        trial_params(space, **no_kd),
        trial_params(space, **no_kd, n_stages=3, decay="step", feature_weight=3.0, **{"frac.1": 0.1}),
        trial_params(space, **no_kd, n_stages=1, **{"order_key.small": 0.0}),
    ]
    for p in variants:
        choice = decode_params(p, space)
        assert choice == baseline  # same stages (none), key, lr, description
        assert choice.key == baseline.key
        assert choice.describe() == baseline.describe() == "student only | lr 1.6e-3"
        assert proxy_cost(choice, {"small": 5.0, "medium": 9.0, "pvt": 7.0}, 1.0) == 300.0
    # a tuned LR stays a different (canonical student-only) run
    tuned = decode_params(trial_params(space, **{**no_kd, "lr": 0.005}), space)
    assert tuned.is_student_only and tuned.lr == 0.005 and tuned.key != baseline.key
    assert tuned == decode_params(trial_params(space, **{**no_kd, "lr": 0.005}, n_stages=3), space)
    # any KD term keeps the teachers
    for kd in ({"pseudo": True}, {"response": True}, {"feature_loss": "mse"}):
        assert decode_params(trial_params(space, **{**no_kd, **kd}), space).teachers == ("medium", "pvt")


def test_choice_dict_round_trip(space: SearchSpace) -> None:
    choice = decode_params(trial_params(space), space)
    again = choice_from_dict(choice.as_dict())
    assert again == choice and again.key == choice.key
    tampered = {**choice.as_dict(), "lr": 0.003}
    with pytest.raises(ValueError, match="key mismatch"):
        choice_from_dict(tampered)


# -- stages and recipes -----------------------------------------------------------------------------


def test_to_stages_for_another_budget(space: SearchSpace) -> None:
    choice = decode_params(trial_params(space), space)
    stages = choice.to_stages(1201)
    assert [s.iterations for s in stages] == [300, 901]
    assert [s.teachers for s in stages] == [("medium",), ("pvt",)]
    first = stages[0]
    assert first.feature is not None and (first.feature.loss, first.feature.weight) == ("mgd", 1.2)
    assert first.response is not None and (first.response.cls_weight, first.response.box_weight) == (0.5, 2.0)
    assert first.response.gate and first.pseudo is None
    assert (first.decay.kind, first.decay.floor, first.lr) == ("cosine", 0.1, 0.002)
    only = student_only_choice(space).to_stages(50)
    assert len(only) == 1 and only[0].teachers == () and only[0].iterations == 50 and not only[0].distills


def test_build_recipe_proxy_and_full(space: SearchSpace, tmp_path: Path) -> None:
    choice = decode_params(trial_params(space), space)
    proxy = build_recipe(
        space, choice, iterations=space.proxy.iterations, proxy=True, seed=3, studies_root=tmp_path
    )
    assert proxy.total_iterations == 300 and proxy.seed == 3
    assert (proxy.data.train_subset, proxy.data.val_subset, proxy.train.eval_every) == (256, 96, 100)
    assert proxy.train.lr == 0.002
    assert set(proxy.teachers) == {"small", "medium", "pvt"}
    # zoo teachers: relative to the studies folder (recipes resolve relative paths against it)
    assert proxy.teachers["pvt"].checkpoint == str(zoo_checkpoint_path(space, "pvt", "."))
    assert str(zoo_checkpoint_path(space, "pvt", tmp_path)).startswith(str(tmp_path / "_zoo" / "pvt-"))
    assert proxy.provenance["curriculum_key"] == choice.key and proxy.provenance["phase"] == "proxy"
    full = build_recipe(
        space, choice, iterations=space.full.iterations, proxy=False, seed=0, studies_root=tmp_path
    )
    assert full.total_iterations == 1200 and full.stage_boundaries() == [0, 300, 1200]
    assert (full.data.train_subset, full.data.val_subset) == (None, None)
    assert load_recipe(save_recipe(full, tmp_path / "r.yaml")) == full


def test_proxy_image_size_applies_to_student(space: SearchSpace) -> None:
    import dataclasses

    small = dataclasses.replace(space, proxy=dataclasses.replace(space.proxy, image_size=96))
    recipe = build_recipe(
        small, decode_params(trial_params(space), space), iterations=300, proxy=True, seed=0
    )
    assert recipe.data.image_size == 96 and recipe.student.image_size == 96


def test_proxy_cost_by_hand(space: SearchSpace) -> None:
    choice = decode_params(trial_params(space), space)  # medium 75 it, pvt 225 it
    cost = proxy_cost(choice, {"medium": 2.0, "pvt": 3.0, "small": 1.0}, 0.5)
    assert cost == pytest.approx(75 * 2.5 + 225 * 3.5)
    assert proxy_cost(student_only_choice(space), {}, 0.5) == pytest.approx(150.0)


# -- baselines ----------------------------------------------------------------------------------------

AP = {"small": 0.30, "medium": 0.45, "pvt": 0.40}


def test_baseline_choices(space: SearchSpace) -> None:
    out = baseline_choices(space, AP, heuristic_order=["small", "medium"])
    assert list(out) == [STUDENT_ONLY, DIRECT, WEAK_TO_STRONG, HEURISTIC]
    assert out[STUDENT_ONLY] is None
    decoded = {k: decode_params(v, space) for k, v in out.items() if v is not None}
    assert decoded[DIRECT].teachers == ("medium",)
    assert decoded[WEAK_TO_STRONG].teachers == ("small", "pvt", "medium")
    assert [s.iterations for s in decoded[WEAK_TO_STRONG].stages] == [100, 100, 100]
    assert decoded[HEURISTIC].teachers == ("small", "medium")
    d = decoded[DIRECT]
    assert (d.feature_loss, d.feature_weight, d.response, d.cls_weight, d.box_weight) == (
        "mgd",
        1.0,
        True,
        1.0,
        1.0,
    )
    assert (d.decay, d.decay_floor, d.pseudo) == ("linear", 0.1, False)
    assert d.lr == pytest.approx(math.sqrt(0.0005 * 0.005), rel=1e-3)
    assert student_only_choice(space).lr == d.lr


def test_baselines_respect_the_space(tmp_path: Path) -> None:
    space = _tiny_space(tmp_path)  # n_stages [1, 2], teachers a, b
    out = baseline_choices(space, {"a": 0.2, "b": 0.1})
    assert HEURISTIC not in out
    assert decode_params(out[WEAK_TO_STRONG], space).teachers == ("b", "a")  # type: ignore[arg-type]
    defaults = default_settings(space)
    assert defaults["lr"] == 0.001 and defaults["temperature"] == 2.0
    with pytest.raises(ValueError, match="no AP for teacher"):
        baseline_choices(space, {"a": 0.2})
    with pytest.raises(ValueError, match="not a searchable teacher"):
        baseline_choices(space, {"a": 0.2, "b": 0.1}, heuristic_order=["c", "a"])


def test_student_only_params_keep_the_parameter_set(space: SearchSpace) -> None:
    """Enqueued baselines (with the student-only carrier) keep the full intersection search space."""
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, multivariate=True)
    )
    study.enqueue_trial(student_only_params(space, AP), user_attrs={"baseline": STUDENT_ONLY})
    for name, params in baseline_choices(space, AP).items():
        if params is not None:
            study.enqueue_trial(params, user_attrs={"baseline": name})

    def objective(trial: optuna.Trial) -> float:
        choice = suggest_curriculum(trial, space)
        if trial.user_attrs.get("baseline") == STUDENT_ONLY:
            choice = student_only_choice(space)
        return 0.1 if choice.is_student_only else 0.2

    study.optimize(objective, n_trials=4)
    assert [t.user_attrs.get("baseline") for t in study.trials] == [
        STUDENT_ONLY,
        DIRECT,
        WEAK_TO_STRONG,
        None,
    ]
    assert set(optuna.search_space.IntersectionSearchSpace().calculate(study)) == set(
        param_distributions(space)
    )


def test_curriculum_choice_rejects_inconsistent_stages() -> None:
    from curriculum_search.search.encoding import StageChoice

    with pytest.raises(ValueError, match="sum to 5, not 6"):
        CurriculumChoice(stages=(StageChoice("a", 5),), total_iterations=6)
    with pytest.raises(ValueError, match="appears twice"):
        CurriculumChoice(stages=(StageChoice("a", 3), StageChoice("a", 3)), total_iterations=6)
