"""Per-stage distillation: turns a :class:`Stage` + model outputs into the weighted KD loss.

``L = L_det + γ(t) · mean_over_teachers(λ_f·L_feat + λ_c·L_cls + λ_r·L_box)``

* feature term: a registered feature loss on the FPN maps (teacher maps aligned to the student's
  strides and sizes, channels adapted inside the loss);
* class/box terms (TADF): dense heads use the same anchors for both models, gated where the teacher
  beats the student (probability of the true label; IoU of the decoded box with ground truth);
  two-stage heads run the teacher's RoI head on the student's sampled proposals (proposal sharing),
  box KD there gated by the same box criterion (the teacher's decoded box closer to the ground truth
  than the student's), classes of another label space mapped by name;
* γ(t): the stage's decay schedule over its iterations.

Pseudo-label KD changes the *targets* of ``L_det`` instead (see :meth:`StageDistiller.targets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from curriculum_search.distill.cache import TeacherOutput
from curriculum_search.distill.config import Stage
from curriculum_search.distill.decay import decay_factor
from curriculum_search.distill.feature import align_features, build_feature_loss, feature_loss_params
from curriculum_search.distill.feature.reference import detector_type
from curriculum_search.distill.pseudo import class_mapping, merge_with_ground_truth, pseudo_targets
from curriculum_search.distill.response import (
    box_gate,
    cls_gate,
    dense_box_kd,
    dense_cls_kd,
    gt_labels_from_matches,
    matched_gt_boxes,
    roi_box_gate,
    roi_box_kd,
    roi_cls_kd,
)
from curriculum_search.errors import ConfigError
from curriculum_search.models.dense import DenseDetector
from curriculum_search.models.detector import Detector, DetOutput, Target
from curriculum_search.models.faster_rcnn import FasterRCNNDetector
from curriculum_search.utils.config import FieldError


@dataclass(frozen=True)
class _ColumnMap:
    """Student/teacher class-logit columns that refer to the same class name."""

    student: Tensor
    teacher: Tensor
    identity: bool


def _column_map(student: Detector, teacher: Detector, with_background: bool) -> _ColumnMap:
    mapping = class_mapping(teacher.class_names, student.class_names)  # teacher label -> student label
    pairs = sorted((s, t) for t, s in mapping.items())
    s_cols = [s for s, _ in pairs]
    t_cols = [t for _, t in pairs]
    if with_background:  # softmax heads: column 0 is background in both
        s_cols, t_cols = [0, *s_cols], [0, *t_cols]
    identity = s_cols == t_cols and len(s_cols) == student.spec.num_classes + int(with_background)
    return _ColumnMap(
        torch.tensor(s_cols, dtype=torch.long), torch.tensor(t_cols, dtype=torch.long), identity
    )


class StageDistiller(nn.Module):
    """Learnable distillation parts of one stage (feature adapters, generators) and its loss."""

    def __init__(
        self,
        stage: Stage,
        student: Detector,
        teachers: dict[str, Detector],
        *,
        source: str | Path | None = None,
        stage_index: int = 0,
    ) -> None:
        super().__init__()
        self.stage = stage
        self.stage_index = stage_index
        self.teacher_names = list(stage.teachers)
        where = f"stages[{stage_index}]"
        self.feature_losses = nn.ModuleDict()
        if stage.feature is not None and stage.feature.weight > 0:
            for name in self.teacher_names:
                t = teachers[name]
                try:
                    self.feature_losses[name] = build_feature_loss(
                        stage.feature.loss,
                        student.fpn_channels,
                        t.fpn_channels,
                        len(student.strides),
                        **_with_detector_type(stage.feature.loss, stage.feature.params, student.kind),
                    )
                except (FieldError, ValueError) as exc:
                    raise ConfigError(source, f"{where}.feature", str(exc)) from None
        self._columns: dict[str, _ColumnMap] = {}
        if stage.response is not None:
            for name in self.teacher_names:
                t = teachers[name]
                if t.kind != student.kind or type(t) is not type(student) or t.strides != student.strides:
                    raise ConfigError(
                        source,
                        f"{where}.response",
                        f"head KD needs teacher {name!r} ({t.spec.label}) to share the student's head type and "
                        f"strides ({student.spec.label}); use feature or pseudo-label KD for it",
                    )
                cmap = _column_map(student, t, with_background=student.kind == "two_stage")
                if len(cmap.student) == 0:
                    raise ConfigError(
                        source, f"{where}.response", f"teacher {name!r} shares no class name with the student"
                    )
                self._columns[name] = cmap
        self._label_maps: dict[str, dict[int, int]] = {}
        if stage.pseudo is not None:
            for name in self.teacher_names:
                self._label_maps[name] = class_mapping(teachers[name].class_names, student.class_names)
                if not self._label_maps[name]:
                    raise ConfigError(
                        source, f"{where}.pseudo", f"teacher {name!r} shares no class name with the student"
                    )

    # -- what the teachers must produce ------------------------------------------------------
    @property
    def needs_dense(self) -> bool:
        return self.stage.response is not None

    @property
    def needs_detections(self) -> bool:
        return self.stage.pseudo is not None

    def gamma(self, step: int) -> float:
        progress = step / max(1, self.stage.iterations - 1)
        d = self.stage.decay
        return decay_factor(d.kind, progress, d.floor, **d.params)

    # -- pseudo labels -------------------------------------------------------------------------
    def targets(
        self, targets: list[Target], outputs: dict[str, TeacherOutput], image_size: int
    ) -> list[Target]:
        """Training targets for ``L_det``: ground truth, or the teachers' fused pseudo labels."""
        p = self.stage.pseudo
        if p is None:
            return targets
        per_teacher = [outputs[n].detections or [] for n in self.teacher_names]
        maps = [self._label_maps[n] for n in self.teacher_names]
        pseudo = pseudo_targets(
            per_teacher,
            maps,
            fuse=p.fuse,
            score_threshold=p.score_threshold,
            iou_threshold=p.fuse_iou,
            image_size=(image_size, image_size),
            nms_iou=p.nms_iou,
        )
        if p.mode == "pseudo":
            merged = pseudo
        else:
            merged = merge_with_ground_truth(
                pseudo, targets, mode="union" if p.mode == "union" else "replace"
            )
        out = []
        for base, new in zip(targets, merged):
            t = dict(base)
            t["boxes"] = new["boxes"].to(base["boxes"].device, torch.float32)
            t["labels"] = new["labels"].to(base["labels"].device, torch.int64)
            out.append(t)
        return out

    # -- the KD loss ---------------------------------------------------------------------------
    def forward(
        self,
        student: Detector,
        s_out: DetOutput,
        teachers: dict[str, Detector],
        t_outs: dict[str, TeacherOutput],
        targets: list[Target],
        image_size: int,
        step: int,
    ) -> dict[str, Tensor]:
        """Weighted, decayed KD terms (already multiplied by γ(t) and the stage weights)."""
        st = self.stage
        gamma = self.gamma(step)
        terms: dict[str, Tensor] = {}
        n = max(1, len(self.teacher_names))
        for name in self.teacher_names:
            t_out, teacher = t_outs[name], teachers[name]
            if name in self.feature_losses and st.feature is not None:
                aligned = align_features(s_out.features, t_out.features, student.strides, teacher.strides)
                lf = self.feature_losses[name](s_out.features, aligned, targets, image_size)
                _add(terms, "kd_feature", st.feature.weight * lf / n)
            if st.response is not None:
                if isinstance(student, DenseDetector):
                    lc, lb = self._dense_kd(student, s_out, t_out, targets, self._columns[name])
                else:
                    lc, lb = self._roi_kd(student, s_out, teacher, t_out, image_size, self._columns[name])
                _add(terms, "kd_cls", st.response.cls_weight * lc / n)
                _add(terms, "kd_box", st.response.box_weight * lb / n)
        return {k: gamma * v for k, v in terms.items()}

    def _dense_kd(
        self,
        student: DenseDetector,
        s_out: DetOutput,
        t_out: TeacherOutput,
        targets: list[Target],
        cmap: _ColumnMap,
    ) -> tuple[Tensor, Tensor]:
        assert s_out.dense is not None and s_out.anchors is not None and s_out.matched_idxs is not None
        assert t_out.dense is not None and self.stage.response is not None
        resp = self.stage.response
        s_logits = s_out.dense["cls_logits"]
        t_logits = t_out.dense["cls_logits"].to(s_logits.dtype)
        if t_logits.shape[:2] != s_logits.shape[:2]:
            raise ConfigError(
                None, "response", "teacher and student dense heads have different anchor layouts"
            )
        if not cmap.identity:
            dev = s_logits.device
            s_full = s_logits
            s_logits = s_logits.index_select(-1, cmap.student.to(dev))
            t_logits = t_logits.index_select(-1, cmap.teacher.to(dev))
        else:
            s_full = s_logits
        gt_labels = gt_labels_from_matches(s_out.matched_idxs, targets)
        if resp.gate:
            # gate on the full student head (label l is column l); teacher columns mapped to student order
            t_for_gate = t_logits if cmap.identity else _scatter_columns(t_logits, cmap.student, s_full)
            w_cls = cls_gate(s_full.detach(), t_for_gate, gt_labels, mode="sigmoid").float()
        else:
            w_cls = (gt_labels >= 0).float()
        l_cls = dense_cls_kd(s_logits, t_logits, w_cls, temperature=resp.temperature)
        anchors = s_out.anchors
        s_boxes = student.decode(s_out.dense["bbox_regression"], anchors)
        t_boxes = student.decode(t_out.dense["bbox_regression"].to(s_boxes.dtype), anchors)
        positive = gt_labels > 0
        if resp.gate:
            gt_boxes = matched_gt_boxes(s_out.matched_idxs, targets).to(s_boxes.device)
            w_box = box_gate(s_boxes.detach(), t_boxes, gt_boxes, positive).float()
        else:
            w_box = positive.float()
        l_box = dense_box_kd(s_boxes, t_boxes, w_box, loss="giou")
        return l_cls, l_box

    def _roi_kd(
        self,
        student: Detector,
        s_out: DetOutput,
        teacher: Detector,
        t_out: TeacherOutput,
        image_size: int,
        cmap: _ColumnMap,
    ) -> tuple[Tensor, Tensor]:
        assert (
            isinstance(teacher, FasterRCNNDetector)
            and s_out.roi is not None
            and self.stage.response is not None
        )
        resp = self.stage.response
        roi = s_out.roi
        proposals = [p.detach() for p in roi.proposals]
        with torch.no_grad():
            feats = [f.to(s_out.features[0].dtype) for f in t_out.features]
            t_logits, t_reg = teacher.roi_outputs(feats, proposals, (image_size, image_size))
        s_logits, s_reg = roi.class_logits, roi.box_regression
        labels = torch.cat(roi.labels) if roi.labels else torch.zeros(len(s_logits), dtype=torch.long)
        if not cmap.identity:
            dev = s_logits.device
            s_logits_m = s_logits.index_select(-1, cmap.student.to(dev))
            t_logits_m = t_logits.index_select(-1, cmap.teacher.to(dev))
        else:
            s_logits_m, t_logits_m = s_logits, t_logits
        if resp.gate:
            t_full = t_logits if cmap.identity else _scatter_columns(t_logits_m, cmap.student, s_logits)
            w = cls_gate(s_logits.detach(), t_full, labels, mode="softmax").float()
        else:
            w = torch.ones(len(labels), device=s_logits.device)
        l_cls = roi_cls_kd(s_logits_m, t_logits_m, w, temperature=resp.temperature)
        # box KD: TADF's box criterion (teacher box closer to the ground truth than the student's)
        t_labels = None if cmap.identity else _teacher_labels(labels, cmap)
        valid = (labels > 0) if t_labels is None else (labels > 0) & (t_labels > 0)
        if resp.gate and roi.regression_targets:
            w_box = roi_box_gate(
                s_reg,
                t_reg,
                labels,
                torch.cat(proposals),
                torch.cat(roi.regression_targets),
                teacher_labels=t_labels,
                box_coder_weights=tuple(student.net.roi_heads.box_coder.weights),
            ).float()
        else:
            w_box = valid.float()
        l_box = roi_box_kd(s_reg, t_reg, labels, w_box, teacher_labels=t_labels)
        return l_cls, l_box


def _teacher_labels(labels: Tensor, cmap: _ColumnMap) -> Tensor:
    """Each RoI's label in the teacher's label space (``-1``: the teacher lacks the class)."""
    top_label = int(labels.max()) if labels.numel() else 0
    size = max(int(cmap.student.max()) if len(cmap.student) else 0, top_label, 0) + 1
    table = torch.full((size,), -1, dtype=torch.long, device=labels.device)
    table[cmap.student.to(labels.device)] = cmap.teacher.to(labels.device)
    return torch.where(labels > 0, table[labels.clamp_min(0)], labels.long())


def _with_detector_type(loss: str, params: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``params`` plus ``detector`` (one-/two-stage paper defaults and reference size, from the
    student's head) for a loss that takes it, unless the stage sets it."""
    out = dict(params)
    if "detector" not in out and "detector" in feature_loss_params(loss):
        out["detector"] = detector_type(kind)
    return out


def _scatter_columns(mapped: Tensor, student_cols: Tensor, like: Tensor) -> Tensor:
    """Place mapped teacher columns at their student column; absent classes get very low logits."""
    out = torch.full_like(like, -20.0, dtype=mapped.dtype)
    out.index_copy_(-1, student_cols.to(mapped.device), mapped)
    return out


def _add(terms: dict[str, Tensor], key: str, value: Tensor) -> None:
    terms[key] = terms[key] + value if key in terms else value


def copy_matching_tensors(student: nn.Module, teacher: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """MTPD stage-1 option: copy teacher neck/head tensors into the student where names and shapes
    match. Returns the copied keys."""
    s_state = student.state_dict()
    copied = []
    for k, v in teacher.state_dict().items():
        if k.startswith(prefixes) and k in s_state and s_state[k].shape == v.shape:
            s_state[k] = v.detach().clone()
            copied.append(k)
    student.load_state_dict(s_state)
    return copied


NECK_HEAD_PREFIXES = ("net.backbone.fpn.", "net.head.", "net.rpn.", "net.roi_heads.")

__all__ = ["NECK_HEAD_PREFIXES", "StageDistiller", "copy_matching_tensors"]
