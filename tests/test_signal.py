"""Issue 12 (search signal): no-KD trials reuse the student-only result; the pruner ignores the
dip after a stage switch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import torch
import yaml

from curriculum_search.search.baselines import STUDENT_ONLY, student_only_choice
from curriculum_search.search.encoding import encode_curriculum
from curriculum_search.search.space import SearchSpace, load_space
from tests.helpers import (
    FakeDataset,
    FakeModel,
    cached_run_options,
    set_identity_generator,
    trial_params,
    two_teacher_recipe,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
TEACHER_BACKBONE = "resnet10t"  # of the `teacher_ckpt` fixture (conftest.py)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    shipped = load_space(REPO / "tests" / "spaces" / "three_teachers.yaml")
    return dataclasses.replace(
        shipped, proxy=dataclasses.replace(shipped.proxy, iterations=300, eval_every=100)
    )


def test_a_no_kd_trial_reuses_the_student_only_result(space: SearchSpace, tmp_path: Path) -> None:
    from curriculum_search.search import coordinator as service
    from curriculum_search.search.options import SearchOptions

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("teacher_info", [{"name": t, "gflops": 5.0} for t in space.search_teachers])
    study.set_user_attr("student_gflops", 1.0)
    opts = SearchOptions(studies_root=tmp_path, progress=False)
    # the student-only baseline ran first
    study.enqueue_trial(
        encode_curriculum({"teachers": ["small"]}, space), user_attrs={"baseline": STUDENT_ONLY}
    )
    base = study.ask()
    choice = service._decode(base, space)
    assert choice == student_only_choice(space)
    assert service._prepare_trial(space, study, base, choice, opts) == "run"
    study.tell(base, 0.25)
    # a searched 3-teacher curriculum without any KD term is that run
    no_kd = {"feature_loss": "none", "response": False, "pseudo": False}
    study.enqueue_trial(encode_curriculum({"teachers": ["small", "medium"], **no_kd}, space))
    trial = study.ask()
    choice = service._decode(trial, space)
    assert service._prepare_trial(space, study, trial, choice, opts) == "reused"
    done = study.trials[-1]
    assert done.value == 0.25 and done.user_attrs["reused_from"] == base.number
    assert done.user_attrs["description"].startswith("student only")
    assert done.user_attrs["proxy_cost"] == 300.0  # student FLOPs only, no teacher charged


# -- 12.2: the pruner ignores the dip after a stage switch ----------------------------------------


def test_pruning_allowed_skips_the_first_stage_and_one_interval_after_each_switch() -> None:
    from curriculum_search.search.space import pruning_allowed

    allowed = [it for it in range(0, 301, 50) if pruning_allowed(it, [100, 100, 100], 50)]
    assert allowed == [100, 200]  # stage ends; 150/250 are the first evaluations of a stage
    # single stage: only the first evaluation (right after the warm-up) and the end are skipped
    assert [it for it in range(0, 301, 50) if pruning_allowed(it, [300], 50)] == [100, 150, 200, 250]
    assert [it for it in range(0, 301, 25) if pruning_allowed(it, [60, 240], 25)] == [
        100,
        125,
        150,
        175,
        200,
        225,
        250,
        275,
    ]


def _study_with_single_stage_runs(space: SearchSpace) -> optuna.Study:
    from curriculum_search.search.space import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(space, 45))
    for k in range(5):  # single-stage runs in their smooth ramp
        t = study.ask()
        for i, step in enumerate(range(50, 301, 50)):
            t.report(0.03 * (i + 1) + 0.002 * k, step)
        study.tell(t, 0.18 + 0.002 * k)
    return study


def _run_curve(study: optuna.Study, curve: dict[int, float], stages: list[int], rule: str) -> int | None:
    """Report ``curve`` like trial_worker does; the iteration it is pruned at (None: never)."""
    from curriculum_search.search.space import pruning_allowed

    trial = study.ask()
    for step, ap in curve.items():
        trial.report(ap, step)
        ok = (
            pruning_allowed(step, stages, 50)
            if rule == "new"
            else stages[0] <= step < sum(stages)  # the rule before issue 12.2
        )
        if ok and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, curve[max(curve)])
    return None


def test_a_curriculum_that_dips_after_each_switch_and_recovers_is_not_pruned(space: SearchSpace) -> None:
    stages = [100, 100, 100]
    dip_and_recover = {50: 0.02, 100: 0.07, 150: 0.03, 200: 0.13, 250: 0.06, 300: 0.21}
    assert _run_curve(_study_with_single_stage_runs(space), dip_and_recover, stages, "old") == 150
    assert _run_curve(_study_with_single_stage_runs(space), dip_and_recover, stages, "new") is None
    # one that does not recover is still pruned, at the next stage end
    stays_low = {**dip_and_recover, 200: 0.05}
    assert _run_curve(_study_with_single_stage_runs(space), stays_low, stages, "new") == 200


# -- 12.8: teachers are scored in their own label space -------------------------------------------


def test_teacher_label_map_by_name() -> None:
    from curriculum_search.models import torchvision_class_names
    from curriculum_search.search.zoo import teacher_label_map

    data = ("person", "car", "traffic light")
    tv = torchvision_class_names("fcos")  # 90 names with "N/A" slots: car is label 3, light 10
    assert teacher_label_map(tv, data) == {1: 1, 3: 2, 10: 3}
    assert teacher_label_map(("Traffic  Light", "person"), data) == {1: 3, 2: 1}  # reordered subset
    assert teacher_label_map(("class_1", "class_2", "class_3"), data) == {1: 1, 2: 2, 3: 3}  # unnamed
    with pytest.raises(ValueError, match="no class name in common"):
        teacher_label_map(("cat", "dog"), data)


class _OwnLabelSpace(torch.nn.Module):
    """An oracle teacher (the ground truth of each image) that speaks its own label space."""

    def __init__(self, oracle: torch.nn.Module, dataset_names: tuple[str, ...], names: tuple[str, ...]):
        super().__init__()
        self.oracle, self.class_names = oracle, names
        self.to_own = {j + 1: names.index(n) + 1 for j, n in enumerate(dataset_names) if n in names}

    def detect(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for det in self.oracle.detect(images):
            keep = torch.tensor([int(lab) in self.to_own for lab in det["labels"]], dtype=torch.bool)
            labels = torch.tensor([self.to_own[int(lab)] for lab in det["labels"][keep]], dtype=torch.int64)
            out.append({"boxes": det["boxes"][keep], "scores": det["scores"][keep], "labels": labels})
        return out


def test_superset_subset_and_reordered_teachers_get_correct_ap_and_ranking(coco: Any) -> None:
    from curriculum_search.engine.evaluate import evaluate
    from curriculum_search.search.baselines import rank_teachers
    from curriculum_search.search.zoo import teacher_label_map

    dataset = FakeDataset(coco, {11: True, 12: True, 13: True})
    names = ("circle", "square")  # dataset labels 1, 2
    oracle = FakeModel(dataset)
    teachers = {
        "reordered": _OwnLabelSpace(oracle, names, ("square", "circle")),
        "superset": _OwnLabelSpace(oracle, names, ("N/A", "dog", "circle", "N/A", "square")),
        "subset": _OwnLabelSpace(oracle, names, ("square",)),
    }
    ap = {
        k: evaluate(m, dataset, label_map=teacher_label_map(m.class_names, names)).ap
        for k, m in teachers.items()
    }
    assert ap["reordered"] == pytest.approx(1.0) and ap["superset"] == pytest.approx(1.0)
    assert ap["subset"] == pytest.approx(0.5)  # perfect on square, nothing on circle
    pool = SimpleNamespace(search_teachers=("reordered", "subset", "superset"))
    assert rank_teachers(pool, ap)[0] == "subset"  # type: ignore[arg-type]
    # the same detections scored in the dataset's label space: wrong, or a crash
    assert evaluate(teachers["reordered"], dataset).ap == pytest.approx(0.0)
    with pytest.raises(ValueError, match="has no COCO category id"):
        evaluate(teachers["superset"], dataset)


def test_zoo_list_scores_torchvision_teachers_in_their_label_space(
    tiny_synthetic: Any, tmp_path: Path
) -> None:
    """A torchvision-architecture teacher (91-slot label space, random weights, no download)."""
    from curriculum_search.models import torchvision_class_names
    from curriculum_search.search.zoo import describe_pool

    studies = tmp_path / "studies"
    data_dir = studies / "coco_named"
    coco_names = ["person", "car", "dog", "cat", "bus", "traffic light"]
    for split in ("train", "val"):
        ann = json.loads(getattr(tiny_synthetic, f"{split}_ann").read_text())
        for cat, name in zip(sorted(ann["categories"], key=lambda c: c["id"]), coco_names):
            cat["name"] = name
        (data_dir / split).mkdir(parents=True)
        for img in ann["images"]:
            shutil.copy(getattr(tiny_synthetic, f"{split}_images") / img["file_name"], data_dir / split)
        (data_dir / f"{split}.json").write_text(json.dumps(ann))
    tv = {
        "arch": "fcos",
        "backbone": "torchvision",
        "num_classes": 90,
        "class_names": list(torchvision_class_names("fcos")),
        "fpn_channels": 256,
        "image_size": 64,
        "score_threshold": 0.0,  # random weights: keep every detection, of all 90 classes
    }
    spec = {
        "name": "tvpool",
        "data": {
            "kind": "coco",
            "image_size": 64,
            **{f"{s}_images": str(data_dir / s) for s in ("train", "val")},
            **{f"{s}_ann": str(data_dir / f"{s}.json") for s in ("train", "val")},
        },
        "student": {
            "arch": "fcos",
            "backbone": "mobilenetv3_small_050",
            "num_classes": 6,
            "class_names": coco_names,
            "fpn_channels": 16,
            "image_size": 64,
        },
        "teachers": {
            "tv": {"spec": tv},  # superset, another order
            "tv_subset": {
                "spec": {
                    **tv,
                    "arch": "retinanet",
                    "num_classes": 3,
                    "class_names": ["zebra", "car", "person"],
                }
            },
        },
        "search": {"n_stages": [1, 2]},
        "train": {"eval_images": 4},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(spec))
    infos = describe_pool(load_space(path), studies, evaluate_missing=True, source=path)
    for info in infos:  # before issue 12.8: ValueError: detection label N has no COCO category id
        assert info.ready and info.ap is not None and 0.0 <= info.ap <= 1.0


# -- 12.4: feature-loss weights mean the same at every resolution ---------------------------------


def _maps(channels: int, sizes: tuple[int, ...], seed: int, batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, channels, s, s, generator=g) for s in sizes]  # >= 0 (identity MGD)


def _up2(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same content at twice the resolution (nearest): per-element statistics unchanged."""
    return [torch.nn.functional.interpolate(m, scale_factor=2, mode="nearest") for m in maps]


def _wide2(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same content on twice the channels."""
    return [torch.cat([m, m], dim=1) for m in maps]


def _loss(name: str, channels: int, detector: str, normalize: bool) -> Any:
    from curriculum_search.distill.feature import build_feature_loss

    torch.manual_seed(0)
    extra: dict[str, Any] = {"lambda_mgd": 0.0, "seed": 0} if name == "mgd" else {}
    loss = build_feature_loss(
        name, channels, channels, 3, detector=detector, normalize_size=normalize, **extra
    )
    if name == "mgd":
        set_identity_generator(loss)  # type: ignore[arg-type]
    return loss


@pytest.mark.parametrize("detector", ["one_stage", "two_stage"])
@pytest.mark.parametrize("name", ["mgd", "fgd"])
def test_the_same_weight_gives_the_same_loss_at_any_size_and_width(name: str, detector: str) -> None:
    sizes, c = (16, 8, 4), 8  # 64 px, strides 4/8/16
    s, t = _maps(c, sizes, 1), _maps(c, sizes, 2)
    boxes = [
        # on cell edges at every stride, so the twice-as-large boxes cover exactly the upsampled cells
        {"boxes": torch.tensor([[0.0, 16.0, 32.0, 48.0], [32.0, 0.0, 64.0, 32.0]])},
        {"boxes": torch.zeros(0, 4)},
    ]
    big = [{"boxes": b["boxes"] * 2} for b in boxes]

    def values(normalize: bool) -> tuple[float, float, float]:
        base = _loss(name, c, detector, normalize)(s, t, boxes, 64).item()
        hi_res = _loss(name, c, detector, normalize)(_up2(s), _up2(t), big, 128).item()
        wide = _loss(name, 2 * c, detector, normalize)(_wide2(s), _wide2(t), boxes, 64).item()
        return base, hi_res, wide

    base, hi_res, wide = values(True)
    assert hi_res == pytest.approx(base, rel=1e-4) and wide == pytest.approx(base, rel=1e-4)
    raw, raw_hi, raw_wide = values(False)  # the papers' plain sums: grow with positions and channels
    assert raw_hi > 3 * raw and raw_wide > 1.1 * raw
    if name == "mgd":  # pure sum of squares: exactly 4x positions, 2x channels
        assert raw_hi == pytest.approx(4 * raw, rel=1e-4) and raw_wide == pytest.approx(2 * raw, rel=1e-4)


def test_the_papers_values_are_reproduced_at_the_reference_size() -> None:
    from curriculum_search.distill.feature.reference import (
        channel_scale,
        element_scale,
        position_scale,
        reference_positions,
    )

    for detector, strides in (("one_stage", (8, 16, 32, 64, 128)), ("two_stage", (4, 8, 16, 32, 64))):
        ref = [torch.empty(2, 256, -(-800 // s), -(-1333 // s), device="meta") for s in strides]
        assert element_scale(ref, detector) == 1.0
        assert position_scale(ref, detector) == 1.0 and channel_scale(ref, detector) == 1.0
    assert reference_positions("one_stage") == 22300
    # the example: 128 px, 64 channels, P3-P7 is ~260x smaller than the reference
    small = [torch.empty(1, 64, 128 // s, 128 // s, device="meta") for s in (8, 16, 32, 64, 128)]
    assert element_scale(small, "one_stage") == pytest.approx(261.6, abs=0.1)
    # and the normalised loss is the paper's value times exactly that factor
    s, t = _maps(8, (16, 8, 4), 1), _maps(8, (16, 8, 4), 2)
    norm = _loss("mgd", 8, "one_stage", True)(s, t).item()
    plain = _loss("mgd", 8, "one_stage", False)(s, t).item()
    assert norm == pytest.approx(plain * element_scale(t, "one_stage"), rel=1e-5)


def test_the_trainer_picks_the_paper_defaults_of_the_students_detector_type() -> None:
    from curriculum_search.distill.distiller import _with_detector_type

    assert _with_detector_type("mgd", {}, "two_stage") == {"detector": "two_stage"}
    assert _with_detector_type("fgd", {"alpha_fgd": 1e-4}, "dense") == {
        "alpha_fgd": 1e-4,
        "detector": "one_stage",
    }
    assert _with_detector_type("mgd", {"detector": "one_stage"}, "two_stage") == {"detector": "one_stage"}
    assert _with_detector_type("cwd", {}, "two_stage") == {}


# -- 12.6: TADF box KD on two-stage students uses the box criterion -------------------------------


def test_roi_box_gate_is_the_box_criterion_not_the_class_gate() -> None:
    from torchvision.models.detection._utils import BoxCoder

    from curriculum_search.distill.response import cls_gate, roi_box_gate

    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    props = torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 50.0, 60.0], [5.0, 5.0, 15.0, 15.0]])
    gt = torch.tensor([[2.0, 2.0, 22.0, 22.0], [30.0, 30.0, 50.0, 60.0], [0.0, 0.0, 1.0, 1.0]])
    gt_deltas = coder.encode_single(gt, props)
    labels = torch.tensor([1, 2, 0])  # K + 1 = 3 columns; RoI 2 is background
    off = torch.tensor([2.0, -2.0, 1.0, 1.0])  # a badly shifted/scaled box
    s_reg, t_reg = torch.zeros(3, 12), torch.zeros(3, 12)
    s_reg[0, 4:8], t_reg[0, 4:8] = off, gt_deltas[0]  # RoI 0: the teacher's box is the ground truth
    s_reg[1, 8:12], t_reg[1, 8:12] = gt_deltas[1], off  # RoI 1: the student's is
    gate = roi_box_gate(s_reg, t_reg, labels, props, gt_deltas)
    assert gate.tolist() == [True, False, False]
    # the classification gate says the opposite here (teacher unsure on RoI 0, sure on RoI 1)
    s_logits = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    t_logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    assert cls_gate(s_logits, t_logits, labels, mode="softmax")[:2].tolist() == [False, True]
    # a teacher with another class set: RoI 1's class 2 is the teacher's label 1, RoI 0's it lacks
    t_other = torch.zeros(3, 8)  # zero deltas decode to the proposal: RoI 1's ground truth
    t_labels = torch.tensor([-1, 1, 0])
    s_worse = s_reg.clone()
    s_worse[1, 8:12] = off
    gate = roi_box_gate(s_worse, t_other, labels, props, gt_deltas, teacher_labels=t_labels)
    assert gate.tolist() == [False, True, False]


def test_two_stage_student_box_kd_is_weighted_by_the_box_gate() -> None:
    from curriculum_search.curriculum.recipe import ResponseKD, Stage
    from curriculum_search.distill.cache import TeacherOutput
    from curriculum_search.distill.distiller import StageDistiller
    from curriculum_search.distill.response import cls_gate, roi_box_gate, roi_box_kd
    from curriculum_search.models import DetectorSpec, build_detector

    torch.manual_seed(0)
    spec = DetectorSpec(
        arch="faster_rcnn", backbone="resnet10t", num_classes=2, fpn_channels=16, image_size=64
    )
    student, teacher = build_detector(spec), build_detector(spec)
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
    ]
    distiller = StageDistiller(
        Stage(teachers=("t",), iterations=4, response=ResponseKD()), student, {"t": teacher}
    )
    s_out = student(images, targets)
    with torch.no_grad():
        t_out = TeacherOutput(features=teacher.features(images))
    _, l_box = distiller._roi_kd(student, s_out, teacher, t_out, 64, distiller._columns["t"])
    roi = s_out.roi
    assert roi is not None and roi.labels is not None and roi.regression_targets is not None
    labels = torch.cat(roi.labels)
    with torch.no_grad():
        _, t_reg = teacher.roi_outputs(t_out.features, [p.detach() for p in roi.proposals], (64, 64))
    box = roi_box_gate(
        roi.box_regression, t_reg, labels, torch.cat(roi.proposals), torch.cat(roi.regression_targets)
    )
    assert l_box.item() == pytest.approx(roi_box_kd(roi.box_regression, t_reg, labels, box.float()).item())
    with torch.no_grad():
        t_logits, _ = teacher.roi_outputs(t_out.features, [p.detach() for p in roi.proposals], (64, 64))
    by_class = (labels > 0) & cls_gate(roi.class_logits, t_logits, labels, mode="softmax")
    assert not torch.equal(box, by_class)  # the two criteria pick different RoIs here
    assert l_box.item() != pytest.approx(
        roi_box_kd(roi.box_regression, t_reg, labels, by_class.float()).item()
    )


# -- 12.5: the heuristic is MTPD's --------------------------------------------------------------


class _Stub(torch.nn.Module):
    """A "detector" whose single FPN level is a fixed function of the image."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn, self.strides = fn, [8]
        self.p = torch.nn.Parameter(torch.zeros(1))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.fn(images)]


def _pool() -> tuple[_Stub, dict[str, _Stub]]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 48, 1, 1, generator=g)
    r1, r2 = torch.randn(16, 48, 1, 1, generator=g), torch.randn(16, 48, 1, 1, generator=g)

    def proj(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, m)

    def noise(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.sin(37.0 * proj(x, m))  # a deterministic function, unpredictable linearly

    student = _Stub(lambda x: x)  # 48 channels: 16 fitting samples (4 images × 2×2) fit anything
    teachers = {
        "near": _Stub(lambda x: proj(x, w) + 0.3 * noise(x, r1)),
        "noise": _Stub(lambda x: noise(x, r2)),
        "strong": _Stub(lambda x: 0.5 * proj(x, w) + noise(x, r1)),
    }
    return student, teachers


def test_adaptation_cost_is_scored_on_held_out_images() -> None:
    from curriculum_search.search.heuristic import adaptation_cost, extract_features

    student, teachers = _pool()
    images = torch.randn(8, 48, 2, 2, generator=torch.Generator().manual_seed(1))
    fit, held = images[:4], images[4:]
    s_fit, s_held = extract_features(student, fit), extract_features(student, held)  # type: ignore[arg-type]
    t = teachers["noise"]
    t_fit, t_held = extract_features(t, fit), extract_features(t, held)  # type: ignore[arg-type]
    assert adaptation_cost(s_fit, t_fit) < 0.05  # in-sample: the adapter memorises noise
    assert adaptation_cost(s_fit, t_fit, eval_src=s_held, eval_dst=t_held) > 0.8  # held out: it cannot


def test_heuristic_orders_every_teacher_by_held_out_cost_strongest_last() -> None:
    from curriculum_search.search.heuristic import heuristic_order, student_adaptation_costs

    student, teachers = _pool()
    images = torch.randn(8, 48, 8, 8, generator=torch.Generator().manual_seed(1))  # 256 samples/side
    ap = {"near": 0.2, "noise": 0.3, "strong": 0.5}
    costs = student_adaptation_costs(student, teachers, images)  # type: ignore[arg-type]
    assert costs["near"] < 0.1 < 0.9 < costs["noise"]
    # all three stages although one would do (the old chain search returned the strongest alone)
    assert heuristic_order(student, teachers, images, ap, 3) == ["near", "noise", "strong"]  # type: ignore[arg-type]
    assert heuristic_order(student, teachers, images, ap, 2) == ["near", "strong"]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 calibration images"):
        student_adaptation_costs(student, teachers, images[:1])  # type: ignore[arg-type]


def test_the_heuristic_baseline_keeps_the_whole_order(space: SearchSpace) -> None:
    from curriculum_search.search.baselines import HEURISTIC, baseline_choices
    from curriculum_search.search.encoding import decode_params

    ap = {"small": 0.30, "medium": 0.45, "pvt": 0.40}
    out = baseline_choices(space, ap, heuristic_order=["pvt", "small", "medium"])  # 3 stages, min 1
    assert decode_params(out[HEURISTIC], space).teachers == ("pvt", "small", "medium")  # type: ignore[arg-type]
    two = dataclasses.replace(space, search=dataclasses.replace(space.search, n_stages=(1, 2)))
    out = baseline_choices(two, ap, heuristic_order=["pvt", "small", "medium"])
    assert decode_params(out[HEURISTIC], two).teachers == ("pvt", "medium")  # type: ignore[arg-type]


# -- 12.7: the paper's two-step pseudo-label KD is reachable by the search -----------------------


def _two_step_params(space: SearchSpace, **over: Any) -> dict[str, Any]:
    return trial_params(
        space, **{"pseudo": True, "pseudo_form": "two_step", "pseudo_gt_fraction": 0.2, **over}
    )


def test_two_step_pseudo_labels_decode_to_a_fused_stage_then_a_ground_truth_finetune(
    space: SearchSpace,
) -> None:
    from curriculum_search.search.encoding import (
        choice_from_dict,
        decode_params,
        param_distributions,
        proxy_cost,
    )

    assert {"pseudo_form", "pseudo_gt_fraction"} <= set(param_distributions(space))  # fixed set
    choice = decode_params(_two_step_params(space), space)  # n_stages 2: medium, pvt
    ps = choice.pseudo_steps
    assert ps is not None and ps.teachers == ("medium", "pvt")
    assert (ps.pseudo_iterations, ps.finetune_iterations, ps.gt_fraction) == (210, 90, 0.2)
    assert choice.describe() == "pseudo labels of medium+pvt(70%) → fine-tune on 20% of labels(30%) | lr 2e-3"
    a, b = choice.to_stages()
    assert a.teachers == ("medium", "pvt") and a.iterations == 210
    assert a.pseudo is not None and (a.pseudo.mode, a.pseudo.fuse, a.pseudo.use_unlabeled) == (
        "pseudo",
        "wbf",
        True,
    )
    assert a.feature is None and a.response is None
    assert b.teachers == () and b.iterations == 90 and b.gt_fraction == 0.2
    assert [s.iterations for s in choice.to_stages(1000)] == [700, 300]
    assert choice.boundaries() == [0, 210, 300]
    # both teachers run during step A, none during step B
    assert proxy_cost(choice, {"medium": 2.0, "pvt": 3.0, "small": 1.0}, 1.0) == 210 * 6.0 + 90 * 1.0
    # a set of teachers: order, fractions and the other KD settings do not change what trains
    same = [
        _two_step_params(space, **{"order_key.medium": 0.6, "order_key.pvt": 0.2}),
        _two_step_params(space, feature_weight=3.0, response=False, decay="step", **{"frac.0": 0.9}),
    ]
    assert {decode_params(p, space).key for p in same} == {choice.key}
    assert decode_params(_two_step_params(space, pseudo_gt_fraction=0.5), space).key != choice.key
    assert decode_params(_two_step_params(space, n_stages=3), space).pseudo_steps.teachers == (  # type: ignore[union-attr]
        "medium",
        "pvt",
        "small",
    )
    # the "add" form and pseudo off are what they were (their keys do not change)
    add = decode_params(_two_step_params(space, pseudo_form="add"), space)
    assert add.pseudo_steps is None and add.teachers == ("medium", "pvt") and add.pseudo
    off = decode_params(_two_step_params(space, pseudo=False), space)
    assert off.pseudo_steps is None and "pseudo_steps" not in off.content()
    assert choice_from_dict(choice.as_dict()) == choice


def test_two_step_curricula_round_trip_through_enqueue(space: SearchSpace) -> None:
    from curriculum_search.search.encoding import choice_from_settings, encode_curriculum, suggest_curriculum

    choice = choice_from_settings(
        space,
        {"teachers": ["small", "pvt"], "pseudo": True, "pseudo_form": "two_step", "pseudo_gt_fraction": 0.3},
    )
    assert choice.pseudo_steps is not None and choice.pseudo_steps.teachers == ("pvt", "small")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(encode_curriculum(choice, space))
    keys: list[str] = []
    study.optimize(lambda t: keys.append(suggest_curriculum(t, space).key) or 0.0, n_trials=1)
    assert keys == [choice.key]


def test_two_step_needs_pseudo_labels_on(tmp_path: Path) -> None:
    from curriculum_search.errors import ConfigError

    data = yaml.safe_load((REPO / "space" / "tiny.yaml").read_text())
    data["search"] = {**data["search"], "pseudo": [False], "pseudo_form": ["two_step"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"search\.pseudo_form: two_step needs pseudo-label KD on"):
        load_space(path)


def test_a_decoded_two_step_curriculum_trains(tmp_path: Path, teacher_ckpt: Path) -> None:
    from curriculum_search.curriculum.trainer import run_recipe
    from curriculum_search.search.encoding import CurriculumChoice, PseudoSteps

    choice = CurriculumChoice(
        stages=(),
        total_iterations=6,
        pseudo=True,
        pseudo_steps=PseudoSteps(("a", "b"), 4, 2, 0.5),
    )
    res = run_recipe(
        two_teacher_recipe(teacher_ckpt, choice.to_stages()), cached_run_options(tmp_path, "two_step")
    )
    assert res.metrics.num_images > 0


def test_the_dashboard_shows_the_two_steps(space: SearchSpace) -> None:
    from curriculum_search.dashboard.study_frames import _stages_of
    from curriculum_search.search.encoding import decode_params

    choice = decode_params(_two_step_params(space), space)
    assert _stages_of(choice.as_dict(), choice.boundaries()) == [
        ("pseudo labels of medium+pvt", 0, 210),
        ("fine-tune", 210, 300),
    ]
