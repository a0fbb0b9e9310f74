"""Adaptation-cost teacher ordering: CKA, adapter fits, chain search, tiny real detectors."""

from __future__ import annotations

import pytest
import torch

from curriculum_search.models import DetectorSpec, build_detector
from curriculum_search.search.heuristic import (
    STUDENT,
    adaptation_cost,
    best_chain,
    extract_features,
    heuristic_order,
    linear_cka,
    strongest_teacher,
)

torch.set_num_threads(1)


def _maps(
    seed: int, channels: int = 8, sizes: tuple[int, ...] = (8, 4), batch: int = 4
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, s, s, generator=g) for s in sizes]


# -- CKA ----------------------------------------------------------------------------------------------


def test_cka_of_itself_is_one() -> None:
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_rotation_and_scale_not_to_noise() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-9)
    noise = torch.randn(500, 8, generator=g)
    assert linear_cka(x, noise) < 0.1


def test_cka_by_hand() -> None:
    # x = [-1, 1] and y = [-1, 1] columns with one extra zero-variance column on y: CKA = 1
    x = torch.tensor([[-1.0], [1.0]])
    y = torch.tensor([[-2.0, 5.0], [2.0, 5.0]])
    assert linear_cka(x, y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(N, Dx\)"):
        linear_cka(torch.zeros(3, 2), torch.zeros(4, 2))


# -- adaptation cost ----------------------------------------------------------------------------------


def test_cost_of_a_linear_function_is_zero_and_of_noise_is_one() -> None:
    src = _maps(0, channels=8, sizes=(16, 8), batch=8)
    w = torch.randn(12, 8, 1, 1, generator=torch.Generator().manual_seed(5))
    linear = [torch.nn.functional.conv2d(f, w, bias=torch.full((12,), 0.7)) for f in src]
    assert adaptation_cost(src, src) < 1e-4
    assert adaptation_cost(src, linear) < 1e-4
    noise = _maps(9, channels=12, sizes=(16, 8), batch=8)
    # 8 inputs explain ~8/N of the variance of independent noise: N = 2048 and 512 samples
    assert adaptation_cost(src, noise) == pytest.approx(1.0, abs=0.05)
    assert adaptation_cost(src, noise, metric="cka") > 0.9


def test_adam_solver_approaches_the_closed_form() -> None:
    src = _maps(0, channels=8, sizes=(16,), batch=8)
    w = torch.randn(8, 8, 1, 1, generator=torch.Generator().manual_seed(5))
    dst = [torch.nn.functional.conv2d(f, w) + 0.3 * n for f, n in zip(src, _maps(3, sizes=(16,), batch=8))]
    exact = adaptation_cost(src, dst, ridge=0.0)  # the unregularised least-squares optimum
    adam = adaptation_cost(src, dst, iters=300, lr=0.05, solver="adam")
    assert 0.0 < exact <= adam + 1e-9
    assert adam < exact + 0.02
    assert adaptation_cost(src, dst, iters=2, lr=0.05, solver="adam") > adam  # more steps, better fit


def test_cost_handles_level_and_channel_mismatch() -> None:
    src = _maps(0, channels=8, sizes=(8, 4, 2))
    dst = _maps(1, channels=16, sizes=(16, 8))  # finer strides, fewer levels, more channels
    cost = adaptation_cost(src, dst)
    assert 0.0 <= cost <= 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        adaptation_cost(src, dst, metric="l1")  # type: ignore[arg-type]


# -- chain search ----------------------------------------------------------------------------------


def _table(costs: dict[tuple[str, str], float]):  # type: ignore[no-untyped-def]
    return lambda a, b: costs.get((a, b), 100.0)


def test_best_chain_by_hand() -> None:
    costs = {("S", "B"): 10.0, ("S", "A"): 1.0, ("A", "B"): 1.0, ("S", "C"): 0.5, ("C", "B"): 20.0}
    assert best_chain(_table(costs), "S", "B", ["A", "B", "C"], 3) == ["A", "B"]
    assert best_chain(_table(costs), "S", "B", ["A", "B", "C"], 1) == ["B"]
    # sum prefers the direct step (5 < 3 + 3), max the two smaller steps (3 < 5)
    costs = {("S", "B"): 5.0, ("S", "A"): 3.0, ("A", "B"): 3.0}
    assert best_chain(_table(costs), "S", "B", ["A", "B"], 2, "sum") == ["B"]
    assert best_chain(_table(costs), "S", "B", ["A", "B"], 2, "max") == ["A", "B"]


def test_best_chain_greedy_beyond_seven_teachers() -> None:
    names = [f"t{i}" for i in range(10)]
    costs = {("S", "t9"): 10.0, ("S", "t3"): 1.0, ("t3", "t5"): 1.0, ("t5", "t9"): 1.0, ("t3", "t9"): 5.0}
    assert best_chain(_table(costs), "S", "t9", names, 3) == ["t3", "t5", "t9"]
    assert best_chain(_table(costs), "S", "t9", names, 2) == ["t3", "t9"]


def test_strongest_teacher() -> None:
    assert strongest_teacher({"a": 0.3, "b": 0.5, "c": 0.5}, ["a", "b", "c"]) == "b"
    with pytest.raises(ValueError, match="no AP"):
        strongest_teacher({"a": 0.3}, ["a", "b"])


# -- tiny real detectors ---------------------------------------------------------------------------


def _det(backbone: str, fpn: int, seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    spec = DetectorSpec(
        arch="fcos", backbone=backbone, num_classes=2, fpn_channels=fpn, image_size=64, head_convs=1
    )
    return build_detector(spec)


@pytest.fixture(scope="module")
def models():  # type: ignore[no-untyped-def]
    return {
        "student": _det("mobilenetv3_small_050", 16, 0),
        "same": _det("mobilenetv3_small_050", 16, 0),
        "other": _det("resnet10t", 32, 1),
        "third": _det("mobilenetv3_small_050", 32, 2),
    }


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_cost_of_a_model_to_itself_is_near_zero(models, images) -> None:  # type: ignore[no-untyped-def]
    s = extract_features(models["student"], images)
    same = extract_features(models["same"], images)
    other = extract_features(models["other"], images)
    self_cost = adaptation_cost(s, same)
    other_cost = adaptation_cost(s, other)
    assert self_cost < 1e-3
    assert other_cost > 0.05 > self_cost
    assert adaptation_cost(s, same, metric="cka") < 1e-6 < adaptation_cost(s, other, metric="cka")


def test_heuristic_chain_ends_at_the_strongest_teacher(models, images) -> None:  # type: ignore[no-untyped-def]
    teachers = {"other": models["other"], "third": models["third"], "same": models["same"]}
    student = models["student"]
    student.train()
    ap = {"other": 0.5, "third": 0.2, "same": 0.1}
    for n in (1, 2, 3):
        for metric in ("mse", "cka"):
            order = heuristic_order(student, teachers, images, ap, n, metric=metric)  # type: ignore[arg-type]
            # MTPD (issue 12.5): every teacher up to n, cheapest first, the strongest last
            assert order[-1] == "other" and len(order) == n
            assert len(set(order)) == len(order)
    assert heuristic_order(student, teachers, images, ap, 1) == ["other"]
    # "same" is the student's twin: the cheapest adaptation, so it comes first
    assert heuristic_order(student, teachers, images, ap, 3) == ["same", "third", "other"]
    assert student.training and all(m.training for m in student.modules())  # modes restored
    assert STUDENT not in heuristic_order(student, teachers, images, ap, 3)
