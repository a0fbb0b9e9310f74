"""Detector zoo: every arch x (CNN, transformer) builds and exposes the uniform outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from curriculum_search.errors import CheckpointError, ConfigError
from curriculum_search.models import DetectorSpec, build_detector, list_archs, load_detector, save_detector
from curriculum_search.models.cost import measure_cost
from tests.conftest import TINY_SWIN

BACKBONES = {
    "cnn": ("resnet10t", {}),
    "transformer": ("swin_tiny_patch4_window7_224", TINY_SWIN),
}


def _spec(arch: str, kind: str, **kw) -> DetectorSpec:
    name, bkw = BACKBONES[kind]
    return DetectorSpec(
        arch=arch,
        backbone=name,
        backbone_kwargs=dict(bkw),
        num_classes=3,
        fpn_channels=16,
        image_size=64,
        head_convs=1,
        **kw,
    )


def _targets():
    return [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 30.0, 60.0, 50.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]


def test_registry_lists_the_three_archs():
    assert {"retinanet", "fcos", "faster_rcnn"} <= set(list_archs())


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("arch", ["retinanet", "fcos", "faster_rcnn"])
def test_arch_exposes_features_heads_losses_and_detections(arch: str, kind: str):
    torch.manual_seed(0)
    model = build_detector(_spec(arch, kind))
    images = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(images, _targets(), detections=True)
    # FPN features: one map per stride, all with the FPN width, sizes = ceil(64 / stride)
    assert len(out.features) == len(model.strides)
    for f, s in zip(out.features, model.strides):
        assert f.shape[:2] == (2, 16) and f.shape[-1] == -(-64 // s)
    assert out.losses and all(torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    if model.kind == "dense":
        assert out.dense is not None and out.anchors is not None and out.matched_idxs is not None
        a = out.dense["cls_logits"].shape[1]
        assert out.dense["cls_logits"].shape == (2, a, 4)  # 3 classes + unused background column
        assert out.dense["bbox_regression"].shape == (2, a, 4)
        assert out.anchors[0].shape == (a, 4)
        assert (out.matched_idxs[0] >= 0).any() and (out.matched_idxs[1] < 0).all()
        boxes = model.decode(out.dense["bbox_regression"], out.anchors)
        assert boxes.shape == (2, a, 4)
    else:
        roi = out.roi
        assert roi is not None and roi.class_logits.shape[1] == 4 and roi.box_regression.shape[1] == 16
        shared = model(images, proposals=[p.detach() for p in roi.proposals])
        assert shared.roi is not None and shared.roi.class_logits.shape == roi.class_logits.shape
    assert out.detections is not None and len(out.detections) == 2
    model.eval()
    dets = model.detect(images)
    assert set(dets[0]) == {"boxes", "scores", "labels"}


def test_checkpoint_round_trip_and_wrong_arch(tmp_path: Path):
    torch.manual_seed(0)
    model = build_detector(_spec("fcos", "cnn")).eval()
    path = save_detector(tmp_path / "m.pt", model, metrics={"ap": 0.5})
    loaded, ckpt = load_detector(path)
    x = torch.randn(1, 3, 64, 64)
    a, b = model(x).features[0], loaded.eval()(x).features[0]
    assert torch.allclose(a, b)
    assert ckpt["metrics"]["ap"] == 0.5
    raw = torch.load(path, weights_only=True)  # plain torch can read it, safely
    assert raw["spec"]["arch"] == "fcos"
    other = _spec("retinanet", "cnn", weights=str(path))
    with pytest.raises(CheckpointError, match=r"m\.pt: checkpoint is for arch='fcos'"):
        build_detector(other)


def test_corrupt_and_missing_checkpoints(tmp_path: Path):
    model = build_detector(_spec("fcos", "cnn"))
    path = save_detector(tmp_path / "m.pt", model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_detector(path)
    (tmp_path / "m.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_detector(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_detector(tmp_path / "missing.pt")


def test_unknown_arch_and_backbone_are_config_errors():
    with pytest.raises(ConfigError, match="arch: unknown detector arch 'yolo'"):
        build_detector(DetectorSpec(arch="yolo", backbone="resnet10t", num_classes=2))
    with pytest.raises(ConfigError, match="backbone: unknown timm model 'resnet_nope'"):
        build_detector(DetectorSpec(arch="fcos", backbone="resnet_nope", num_classes=2))


def test_vit_backbone_gets_a_simple_pyramid():
    spec = DetectorSpec(
        arch="fcos",
        backbone="vit_tiny_patch16_224",
        num_classes=2,
        fpn_channels=16,
        image_size=64,
        head_convs=1,
        backbone_kwargs={"depth": 3},
    )
    model = build_detector(spec)
    feats = model.features(torch.randn(1, 3, 64, 64))
    assert model.strides == [8, 16, 32, 64, 128] and feats[0].shape[-1] == 8


@pytest.mark.parametrize(
    ("backbone", "kwargs"),
    [
        ("pvt_v2_b0", {"depths": (1, 1, 1, 1)}),  # rejects img_size: built without it
        ("efficientformerv2_s0", {"depths": (1, 1, 1, 1)}),  # needs img_size for its attention
    ],
)
def test_transformers_with_and_without_img_size_run_at_the_detector_size(backbone: str, kwargs: dict):
    spec = DetectorSpec(
        arch="fcos",
        backbone=backbone,
        num_classes=3,
        fpn_channels=16,
        image_size=64,
        head_convs=1,
        backbone_kwargs=kwargs,
    )
    model = build_detector(spec)
    out = model(torch.randn(2, 3, 64, 64), _targets()[:1] * 2)
    assert [f.shape[-1] for f in out.features[:3]] == [8, 4, 2] and torch.isfinite(out.loss)


def test_a_wrong_backbone_keyword_is_not_mistaken_for_img_size():
    spec = DetectorSpec(arch="fcos", backbone="resnet10t", num_classes=2, backbone_kwargs={"nope": 1})
    with pytest.raises(TypeError, match="nope"):
        build_detector(spec)


def test_cost_metadata_for_a_zoo_model():
    model = build_detector(_spec("fcos", "cnn"))
    cost = measure_cost(model, 64, iters=1, warmup=1)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.gflops > 0 and cost.latency_ms > 0


def test_pretrained_weight_names_are_validated_before_any_download():
    spec = DetectorSpec(arch="fcos", backbone="torchvision", num_classes=90, weights="torchvision:NOPE")
    with pytest.raises(ConfigError, match="weights: unknown torchvision weights 'NOPE' \\(known: COCO_V1"):
        build_detector(spec)
    with pytest.raises(ConfigError, match=r"num_classes: .* predicts 90 classes"):
        build_detector(
            DetectorSpec(arch="fcos", backbone="torchvision", num_classes=6, weights="torchvision:DEFAULT")
        )
    with pytest.raises(ConfigError, match="torchvision: weights need backbone: torchvision"):
        build_detector(
            DetectorSpec(arch="fcos", backbone="resnet10t", num_classes=90, weights="torchvision:DEFAULT")
        )
