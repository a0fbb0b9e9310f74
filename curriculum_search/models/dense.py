"""Shared forward for one-stage (dense) detectors: RetinaNet and FCOS."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from torch import Tensor

from curriculum_search.models.detector import Detection, Detector, DetOutput, Target, check_targets


class DenseDetector(Detector):
    """One-stage detector: FPN -> dense head ``{cls_logits (B,A,K), bbox_regression (B,A,4), ...}``.

    Subclasses implement :meth:`match` (anchor -> gt index, -1 background, -2 ignore) and
    :meth:`compute_losses` with torchvision's own matching and loss code.
    """

    kind = "dense"

    def head(self, features: list[Tensor]) -> dict[str, Tensor]:
        return self.net.head(features)  # type: ignore[operator]

    def anchors(self, images: Tensor, features: list[Tensor]) -> list[Tensor]:
        return self.net.anchor_generator(self.image_list(images), features)  # type: ignore[operator]

    def num_anchors_per_level(self, features: list[Tensor], head: dict[str, Tensor]) -> list[int]:
        hw = [f.shape[-2] * f.shape[-1] for f in features]
        per_loc = head["cls_logits"].shape[1] // sum(hw)
        return [n * per_loc for n in hw]

    def match(self, anchors: list[Tensor], targets: list[Target], num_per_level: list[int]) -> list[Tensor]:
        raise NotImplementedError

    def compute_losses(
        self,
        targets: list[Target],
        head: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
        num_per_level: list[int],
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    @staticmethod
    def run_matcher(compute_loss: Callable[..., Any], attrs: dict[str, Any], *args: Any) -> list[Tensor]:
        """Run torchvision's own ``compute_loss`` matching code and capture ``matched_idxs``.

        torchvision computes the anchor matches inside ``compute_loss`` and does not return them;
        calling it on a stand-in ``self`` whose head records the matches reuses its exact logic.
        """
        captured: list[list[Tensor]] = []

        def grab(targets: Any, head: Any, anchors: Any, matched: list[Tensor]) -> dict[str, Tensor]:
            captured.append(matched)
            return {}

        compute_loss(SimpleNamespace(head=SimpleNamespace(compute_loss=grab), **attrs), *args)
        return captured[0]

    def decode(self, bbox_regression: Tensor, anchors: list[Tensor]) -> Tensor:
        """Decode ``(B, A, 4)`` regression outputs into xyxy boxes ``(B, A, 4)``."""
        import torch

        stacked = torch.stack(anchors)
        coder = self.net.box_coder  # type: ignore[union-attr]
        if hasattr(coder, "decode_single") and coder.__class__.__name__ == "BoxCoder":
            flat = coder.decode_single(bbox_regression.reshape(-1, 4), stacked.reshape(-1, 4))
            return flat.reshape(bbox_regression.shape)
        return coder.decode(bbox_regression, stacked)  # type: ignore[operator]

    def postprocess(
        self,
        head: dict[str, Tensor],
        anchors: list[Tensor],
        num_per_level: list[int],
        image_size: tuple[int, int],
    ) -> list[Detection]:
        # column 0 of the sigmoid class head is background, never a class (labels are 1..C):
        # an untrained head can score it highest, so it is masked before torchvision picks top-k.
        logits = head["cls_logits"].clone()
        logits[..., 0] = float("-inf")
        head = {**head, "cls_logits": logits}
        split = {k: list(v.split(num_per_level, dim=1)) for k, v in head.items()}
        split_anchors = [list(a.split(num_per_level)) for a in anchors]
        sizes = [image_size] * len(anchors)
        return self.net.postprocess_detections(split, split_anchors, sizes)  # type: ignore[operator]

    def forward(
        self,
        images: Tensor,
        targets: list[Target] | None = None,
        *,
        detections: bool = False,
        proposals: list[Tensor] | None = None,
    ) -> DetOutput:
        features = self.features(images)
        head = self.head(features)
        anchors = self.anchors(images, features)
        per_level = self.num_anchors_per_level(features, head)
        out = DetOutput(features=features, dense=head, anchors=anchors, num_anchors_per_level=per_level)
        if targets is not None:
            check_targets(targets)
            out.matched_idxs = self.match(anchors, targets, per_level)
            out.losses = self.compute_losses(targets, head, anchors, out.matched_idxs, per_level)
        if detections:
            detached = {k: v.detach() for k, v in head.items()}
            out.detections = self.postprocess(detached, anchors, per_level, tuple(images.shape[-2:]))  # type: ignore[arg-type]
        return out
