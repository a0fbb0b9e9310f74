"""Search-space files: the shipped spaces, validation errors naming file + key, hashes, sampler/pruner."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from curriculum_search.errors import ConfigError
from curriculum_search.search.baselines import planned_baselines
from curriculum_search.search.space import (
    default_warmup_steps,
    load_space,
    make_pruner,
    make_sampler,
    pool_hash,
    save_space,
    zoo_key,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "tests" / "spaces" / "three_teachers.yaml"
SHIPPED = REPO / "space" / "default.yaml"
COCO = REPO / "space" / "coco_torchvision.yaml"


def _tiny() -> dict[str, Any]:
    """A small valid space as a dict (two checkpoint teachers, one zoo teacher)."""
    spec = {"arch": "fcos", "backbone": "resnet10t", "num_classes": 2, "fpn_channels": 32, "image_size": 64}
    return {
        "name": "tiny",
        "data": {"kind": "synthetic", "image_size": 64},
        "student": {
            "arch": "fcos",
            "backbone": "mobilenetv3_small_050",
            "num_classes": 2,
            "fpn_channels": 16,
            "image_size": 64,
        },
        "teachers": {
            "a": {"checkpoint": "ckpt/a.pt"},
            "b": {"checkpoint": "ckpt/b.pt"},
            "z": {"zoo": {"spec": spec, "iterations": 10}},
        },
        "proxy": {"iterations": 30, "train_subset": 8, "val_subset": 4, "eval_every": 10},
        "full": {"iterations": 60},
    }


def _write(tmp_path: Path, data: dict[str, Any], name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


# -- shipped spaces ---------------------------------------------------------------------------------


def test_default_space_loads() -> None:
    """The shipped default (issue 17's design): a small student, a CNN and a transformer teacher
    trained clearly longer than the student's full length, a fixed learning rate, 3 race seeds."""
    space = load_space(SHIPPED)
    assert space.name == "default"
    assert space.data.kind == "synthetic" and space.data.image_size == 96
    assert (space.student.arch, space.student.backbone, space.student.fpn_channels) == (
        "fcos",
        "mobilenetv3_small_050",
        32,
    )
    assert set(space.teachers) == {"medium", "pvt"}
    assert all(e.kind == "zoo" for e in space.teachers.values())
    pvt = space.teachers["pvt"].zoo
    assert pvt is not None and pvt.spec.backbone == "pvt_v2_b0" and pvt.lr == 0.001
    assert all(
        e.zoo is not None and e.zoo.iterations >= 1.5 * space.full.iterations for e in space.teachers.values()
    )
    assert space.search.n_stages == (1, 2)
    assert space.search.lr[0] == space.search.lr[1] == space.train.lr
    assert space.selection.seeds[-1] >= 3


def test_three_teacher_fixture_loads() -> None:
    space = load_space(DEFAULT)
    assert space.data.image_size == 128
    assert space.search_teachers == ("small", "medium", "pvt")
    assert space.search.n_stages == (1, 3)


def test_coco_space_loads_with_torchvision_classes() -> None:
    from curriculum_search.models import torchvision_class_names

    space = load_space(COCO)
    assert (
        space.data.kind == "coco"
        and space.data.train_ann == "/data/coco/annotations/instances_train2017.json"
    )
    assert space.student.weights == "timm" and space.student.num_classes == 80
    assert "N/A" not in space.student.class_names and "person" in space.student.class_names
    assert set(space.teachers) == {"retinanet", "fcos", "faster_rcnn"}
    for arch, entry in space.teachers.items():
        assert entry.spec is not None
        assert entry.spec.arch == arch and entry.spec.weights == "torchvision:DEFAULT"
        assert entry.spec.num_classes == 90
        assert entry.spec.class_names == torchvision_class_names(arch)
        assert entry.spec.image_size == 512


def test_save_and_reload_is_equal(tmp_path: Path) -> None:
    space = load_space(DEFAULT)
    again = load_space(save_space(space, tmp_path / "copy.yaml"))
    assert again == space


def test_relative_paths_resolve_against_the_space_file(tmp_path: Path) -> None:
    sub = tmp_path / "cfg"
    sub.mkdir()
    data = _tiny()
    data["data"] = {
        "kind": "coco",
        "image_size": 64,
        "train_images": "imgs/train",
        "train_ann": "a/train.json",
        "val_images": "/abs/val",
        "val_ann": "a/val.json",
    }
    space = load_space(_write(sub, data))
    assert space.teachers["a"].checkpoint == str(sub / "ckpt" / "a.pt")
    assert space.data.train_images == str(sub / "imgs" / "train")
    assert space.data.val_images == "/abs/val"


# -- errors name the file and the key ---------------------------------------------------------------


BAD_CASES = [
    # (dotted key to set, value, expected key in the message, expected words)
    ("bogus", 1, "bogus", "unknown key"),
    ("proxy.iteratons", 10, "proxy.iteratons", "unknown key"),
    ("search.n_stages", "two", "search.n_stages", "expected a list"),
    ("search.n_stages", [1, "x"], "search.n_stages[1]", "expected an integer"),
    ("trials", "many", "trials", "expected an integer"),
    ("search.response", "yes", "search.response", "expected a list"),
    ("search.n_stages", [2, 1], "search.n_stages", "lo <= hi"),
    ("search.n_stages", [1, 4], "search.n_stages", "at most 3"),
    ("search.min_stage_fraction", 0.5, "search.min_stage_fraction", "(0, 1/3]"),
    ("search.lr", [0.0, 0.01], "search.lr", "0 < lo"),
    ("search.decay_floor", [0.0, 1.5], "search.decay_floor", "hi <= 1"),
    ("search.feature_weight", [4.0, 0.25], "search.feature_weight", "lo <= hi"),
    ("search.cls_weight", [0.1], "search.cls_weight", "expected 2 items"),
    ("search.teachers", ["a", "huge"], "search.teachers[1]", "unknown teacher 'huge'"),
    ("search.feature_losses", ["mgd", "fancy"], "search.feature_losses[1]", "unknown feature loss 'fancy'"),
    ("search.decay", ["linear", "wobbly"], "search.decay[1]", "unknown decay 'wobbly'"),
    (
        "search",
        {"feature_losses": ["none"], "response": [False]},
        "search.feature_losses",
        "no distillation method",
    ),
    ("sampler.name", "bayes", "sampler.name", "must be one of"),
    ("sampler.params", {"n_startup": 3}, "sampler.params.n_startup", "unknown tpe sampler parameter"),
    ("sampler", {"name": "grid", "params": {"points": 0}}, "sampler.params.points", "integer >= 1"),
    ("pruner.name", "asha", "pruner.name", "must be one of"),
    ("pruner.params", {"patience": 2}, "pruner.params.patience", "unknown median pruner parameter"),
    (
        "teachers.a",
        {"checkpoint": "x.pt", "spec": {"arch": "fcos", "backbone": "resnet18", "num_classes": 2}},
        "teachers.a.checkpoint",
        "exactly one",
    ),
    ("teachers.z.zoo.iterations", 0, "teachers.z.zoo.iterations", "must be >= 1"),
    ("teachers.z.zoo.spec.fpn_channels", 4, "teachers.z.zoo.spec.fpn_channels", "must be >= 8"),
    ("name", "_zoo", "name", "folder name"),
    ("student.image_size", 128, "student.image_size", "must equal data.image_size"),
    ("proxy.eval_every", 100, "proxy.eval_every", "0..iterations"),
]


@pytest.mark.parametrize(
    ("key", "value", "where", "words"), BAD_CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in BAD_CASES]
)
def test_bad_space_names_file_and_key(tmp_path: Path, key: str, value: Any, where: str, words: str) -> None:
    path = _write(tmp_path, _set(_tiny(), key, value))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {where}: "), msg
    assert words in msg, msg
    assert "\n" not in msg


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: tiny\nsearch: {n_stages: [1, 2}\n")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}: line 2")
    assert "malformed YAML" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_space(tmp_path / "nope.yaml")


def test_missing_student_is_reported(tmp_path: Path) -> None:
    data = _tiny()
    del data["student"]
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"student: missing required key"):
        load_space(path)


# -- pool hash --------------------------------------------------------------------------------------


def test_pool_hash_follows_checkpoint_content(tmp_path: Path) -> None:
    path = _write(tmp_path, _tiny())
    missing = pool_hash(load_space(path))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.pt").write_bytes(b"weights v1")
    h1 = pool_hash(load_space(path))
    assert h1 != missing
    assert pool_hash(load_space(path)) == h1  # stable
    (tmp_path / "ckpt" / "a.pt").write_bytes(b"weights v2")
    h2 = pool_hash(load_space(path))
    assert h2 != h1
    (tmp_path / "ckpt" / "a.pt").write_bytes(b"weights v1")
    assert pool_hash(load_space(path)) == h1


def test_pool_hash_ignores_search_settings_but_not_teachers(tmp_path: Path) -> None:
    base = pool_hash(load_space(_write(tmp_path, _tiny(), "a.yaml")))
    other = _set(_set(_tiny(), "trials", 7), "search.lr", [0.001, 0.002])
    assert pool_hash(load_space(_write(tmp_path, other, "b.yaml"))) == base
    zoo_changed = _set(_tiny(), "teachers.z.zoo.iterations", 11)
    assert pool_hash(load_space(_write(tmp_path, zoo_changed, "c.yaml"))) != base
    renamed = _tiny()
    renamed["teachers"]["c"] = renamed["teachers"].pop("b")
    assert pool_hash(load_space(_write(tmp_path, renamed, "d.yaml"))) != base


def test_zoo_key_depends_on_training_data(tmp_path: Path) -> None:
    a = load_space(_write(tmp_path, _tiny(), "a.yaml"))
    b = load_space(_write(tmp_path, _set(_tiny(), "data.synthetic", {"num_train": 50}), "b.yaml"))
    assert zoo_key(a, "z") != zoo_key(b, "z")
    with pytest.raises(KeyError):
        zoo_key(a, "a")


# -- sampler and pruner -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
        ("grid", optuna.samplers.GridSampler),
    ],
)
def test_make_sampler(tmp_path: Path, name: str, cls: type) -> None:
    space = load_space(_write(tmp_path, _set(_tiny(), "sampler", {"name": name})))
    assert isinstance(make_sampler(space), cls)


def test_run_seed_reseeds_the_sampler(tmp_path: Path) -> None:
    """``run --seed N`` proposes other curricula than the space's seed (repeated pipelines differ),
    the same ones for the same N, and an explicit ``sampler.params.seed`` still wins."""
    space = load_space(_write(tmp_path, _set(_tiny(), "sampler", {"name": "random"})))

    def draws(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        return [study.ask().suggest_float("x", 0.0, 1.0) for _ in range(3)]

    assert draws(make_sampler(space, seed=1)) == draws(make_sampler(space, seed=1))
    assert draws(make_sampler(space, seed=1)) != draws(make_sampler(space, seed=2))
    assert draws(make_sampler(space)) == draws(make_sampler(space, seed=space.seed))
    pinned = load_space(_write(tmp_path, _set(_tiny(), "sampler", {"name": "random", "params": {"seed": 7}})))
    assert draws(make_sampler(pinned, seed=1)) == draws(make_sampler(pinned, seed=2))


def test_startup_draws_are_counted_after_the_baselines(tmp_path: Path) -> None:
    """``n_startup_trials`` random draws come after the enqueued baselines: with 4 baselines
    finished, TPE (n_startup_trials 2) still draws at random, and models only after 2 searched
    trials; told of no baselines it models at once (what used to happen: the baselines used up the
    random start and TPE proposed variations of the best baseline)."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    space = load_space(
        _write(tmp_path, _set(_tiny(), "sampler", {"name": "tpe", "params": {"n_startup_trials": 2}}))
    )
    dists = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}

    def models_after(sampler: optuna.samplers.BaseSampler, finished: int) -> bool:
        study = optuna.create_study(sampler=sampler, direction="maximize")
        for i in range(finished):
            params = {"x": 0.1 * (i + 1), "y": 0.05 * (i + 1)}
            study.add_trial(create_trial(params=params, distributions=dists, value=float(i)))
        trial = study.ask()
        relative = sampler.infer_relative_search_space(study, trial)
        return bool(sampler.sample_relative(study, trial, relative))

    assert planned_baselines(space) == 4  # student alone, direct, weak->strong, heuristic
    assert not models_after(make_sampler(space, enqueued=4), 4)
    assert not models_after(make_sampler(space, enqueued=4), 5)
    assert models_after(make_sampler(space, enqueued=4), 6)
    assert models_after(make_sampler(space), 4)
    one_stage = load_space(_write(tmp_path, _set(_tiny(), "search.n_stages", [2, 3]), "two.yaml"))
    assert planned_baselines(one_stage) == 3  # no single-stage direct baseline


def test_cmaes_without_its_package_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cmaes", None)  # as if the package were missing
    path = _write(tmp_path, _set(_tiny(), "sampler", {"name": "cmaes"}))
    with pytest.raises(ConfigError, match=r"sampler\.name: cmaes needs the 'cmaes' package"):
        load_space(path)


def test_median_pruner_warmup_is_the_shortest_first_stage(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, _tiny()))
    # up to 3 stages of >= 15% of 30 iterations: ceil(4.5) = 5
    assert default_warmup_steps(space) == 5
    pruner = make_pruner(space)
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert pruner._n_warmup_steps == 5
    assert make_pruner(space, 12)._n_warmup_steps == 12  # type: ignore[attr-defined]
    fixed = load_space(_write(tmp_path, _set(_tiny(), "pruner.warmup_steps", 3), "w.yaml"))
    assert make_pruner(fixed, 12)._n_warmup_steps == 3  # type: ignore[attr-defined]


def test_single_stage_warmup_is_one_eval_interval(tmp_path: Path) -> None:
    space = load_space(_write(tmp_path, _set(_tiny(), "search.n_stages", [1, 1])))
    assert default_warmup_steps(space) == 10


def test_other_pruners(tmp_path: Path) -> None:
    hb = load_space(_write(tmp_path, _set(_tiny(), "pruner", {"name": "hyperband"}), "h.yaml"))
    pruner = make_pruner(hb)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (5, 30)
    patient = load_space(
        _write(tmp_path, _set(_tiny(), "pruner", {"name": "patient", "params": {"patience": 2}}), "p.yaml")
    )
    assert isinstance(make_pruner(patient), optuna.pruners.PatientPruner)
    none = load_space(_write(tmp_path, _set(_tiny(), "pruner", {"name": "none"}), "n.yaml"))
    assert isinstance(make_pruner(none), optuna.pruners.NopPruner)
