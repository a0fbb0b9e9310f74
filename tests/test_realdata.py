"""A user's COCO folder end to end: init -> run -> predict, its oddities, detections files scored by
an independent evaluator, loader workers, and pretrained weights on a machine without internet."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from faster_coco_eval import COCO as FCOCO
from faster_coco_eval import COCOeval_faster
from PIL import Image

from curriculum_search.cli import main as cli
from curriculum_search.data import CocoDetection, TransformConfig, infinite_batches, make_loader
from curriculum_search.data.loader import LoaderDataError, default_num_workers
from curriculum_search.engine.evaluate import evaluate, write_detections
from curriculum_search.errors import ConfigError, DataError
from curriculum_search.init_space import DatasetStats, inspect_dataset, suggest_image_size
from curriculum_search.search.space import load_space
from tests.coco_fixture import NUT, UserCoco, make_user_coco


@pytest.fixture(scope="module")
def user_coco(tmp_path_factory: pytest.TempPathFactory) -> UserCoco:
    return make_user_coco(tmp_path_factory.mktemp("usercoco"))


def _init_args(d: UserCoco) -> list[str]:
    return [
        "init",
        "--train-images",
        str(d.train_images),
        "--train-ann",
        str(d.train_ann),
        "--val-images",
        str(d.val_images),
        "--val-ann",
        str(d.val_ann),
    ]


def _fcoco_ap(ann_file: Path, results: Path) -> float:
    gt = FCOCO(str(ann_file))
    dt = gt.loadRes(str(results))
    ev = COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0])


def _tiny(space_file: Path, out: Path) -> Path:
    """The generated space with its budgets and models made tiny (the test's only edit)."""
    d = yaml.safe_load(space_file.read_text())
    d["data"]["image_size"] = d["student"]["image_size"] = 64
    d["student"].update(fpn_channels=16, head_convs=1)
    for t in d["teachers"].values():
        t["zoo"]["spec"].update(image_size=64, fpn_channels=16, head_convs=1)
        t["zoo"].update(iterations=4, batch_size=4)
    d["proxy"].update(iterations=8, train_subset=12, val_subset=6, eval_every=4)
    d["full"].update(iterations=8, eval_every=4)
    d["search"]["n_stages"] = [1, 2]
    d["trials"] = 5
    d["train"].update(batch_size=4, checkpoint_every=4, warmup_iterations=1, threads=1, num_workers=0)
    d["selection"] = {"shortlist": 1, "rungs": [1.0], "seeds": [2], "lr_matched": False, "holdout": 0.25}
    out.write_text(yaml.safe_dump(d))
    return out


# -- the whole flow --------------------------------------------------------------------------------
@pytest.mark.slow
def test_init_run_predict_on_a_users_coco_folder(
    user_coco: UserCoco, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space_file = tmp_path / "space" / "parts.yaml"
    assert cli([*_init_args(user_coco), "-o", str(space_file)]) == 0
    printed = capsys.readouterr().out
    assert "nut (id 7)" in printed and "-> image_size 96" in printed and "left out categories" in printed
    text = space_file.read_text()
    assert (
        "# Image size, as init reasoned:" in text and "torchvision:DEFAULT" in text
    )  # commented alternative
    assert "\nselection: {" in text
    space = load_space(space_file)
    assert space.split_names() == ("holdout", "val")  # selection on a carve-out, report on val
    assert space.name == "parts" and space.student.class_names == ("nut",) and space.data.image_size == 96
    backbones = {n: e.zoo.spec.backbone for n, e in space.teachers.items() if e.zoo is not None}
    assert "pvt_v2_b0" in backbones.values() and any(b.startswith("resnet") for b in backbones.values())
    assert space.teachers["pvt"].zoo is not None and space.teachers["pvt"].zoo.lr == 0.001
    assert space.student.weights is None and all(
        e.zoo and e.zoo.spec.weights is None for e in space.teachers.values()
    )

    studies = tmp_path / "studies"
    tiny = _tiny(space_file, tmp_path / "space" / "parts_tiny.yaml")
    assert cli(["run", "--space", str(tiny), "--studies-dir", str(studies), "--threads", "1", "-q"]) == 0
    full = studies / "parts" / "full"
    assert (studies / "parts" / "best_recipe.yaml").is_file()

    ckpt = torch.load(full / "student.pt", weights_only=True)
    assert ckpt["meta"]["category_ids"] == [NUT] and ckpt["meta"]["class_names"] == ["nut"]
    assert ckpt["meta"]["image_size"] == 64

    # the full run's detections: original coordinates, dataset ids, same AP as an independent evaluator
    dets = json.loads((full / "detections_val.json").read_text())
    val = json.loads(user_coco.val_ann.read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in val["images"]}
    assert dets and {d["category_id"] for d in dets} == {NUT} and {d["image_id"] for d in dets} <= set(sizes)
    for d in dets:
        w, h = sizes[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert x >= 0 and y >= 0 and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
    ap = json.loads((full / "metrics.json").read_text())["ap"]
    assert abs(_fcoco_ap(user_coco.val_ann, full / "detections_val.json") - ap) < 1e-3

    # predict on a folder and a single file, with the val JSON's ids and drawings
    out = tmp_path / "pred"
    gray = user_coco.val_images / "img_003_gray.png"
    assert (
        cli(
            [
                "predict",
                "--weights",
                str(full / "student.pt"),
                str(user_coco.val_images),
                "-o",
                str(out),
                "--draw",
            ]
        )
        == 0
    )
    pred = json.loads((out / "detections.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert len(images["images"]) == len(val["images"]) and images["categories"] == [
        {"id": NUT, "name": "nut"}
    ]
    assert {d["category_id"] for d in pred} == {NUT}
    assert sorted(p.name for p in (out / "drawn").iterdir()) == sorted(
        Path(im["file_name"]).stem + ".png" for im in val["images"]
    )
    with Image.open(out / "drawn" / "img_003_gray.png") as im:
        assert im.size == Image.open(gray).size and im.mode == "RGB"
    out2 = tmp_path / "pred2"
    args = ["predict", "--weights", str(full / "student.pt"), str(user_coco.val_images), "-o", str(out2)]
    assert cli([*args, "--ann", str(user_coco.val_ann)]) == 0
    pred2 = json.loads((out2 / "detections.json").read_text())
    # same model, same pixels, the val JSON's image ids: exactly the full run's detections
    key = lambda d: (d["image_id"], round(d["score"], 5), [round(v, 3) for v in d["bbox"]])  # noqa: E731
    assert sorted(map(key, pred2)) == sorted(map(key, dets))


def test_init_with_a_test_set_reports_on_it(user_coco: UserCoco, tmp_path: Path) -> None:
    out = tmp_path / "t.yaml"
    args = [*_init_args(user_coco), "-o", str(out)]
    assert cli([*args, "--test-images", str(user_coco.val_images), "--test-ann", str(user_coco.val_ann)]) == 0
    space = load_space(out)
    assert space.data.test_ann == str(user_coco.val_ann.resolve()) and space.split_names() == ("val", "test")
    assert cli([*args, "--force", "--test-images", str(user_coco.val_images)]) == 2  # both or neither


def test_init_refuses_to_overwrite_and_names_a_broken_image(
    user_coco: UserCoco, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.yaml"
    out.write_text("mine\n")
    assert cli([*_init_args(user_coco), "-o", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err and out.read_text() == "mine\n"

    broken = make_user_coco(tmp_path / "broken", num_train=12, num_val=4)
    (broken.train_images / "img_007.png").write_bytes(b"not a png at all")
    assert cli([*_init_args(broken), "-o", str(tmp_path / "b.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "img_007.png" in err and "image id 1049" in err

    resized = make_user_coco(tmp_path / "resized", num_train=12, num_val=4)
    Image.new("RGB", (50, 40)).save(resized.val_images / "img_001.png")
    assert cli([*_init_args(resized), "-o", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image id 1007" in err and "50x40" in err


def _stats(long_side: float, rel10: float) -> DatasetStats:
    return DatasetStats(
        train_images=100,
        train_annotated=100,
        val_images=20,
        val_annotated=20,
        class_names=("a",),
        category_ids=(1,),
        boxes_per_class=(300,),
        unused_categories=(),
        crowd_boxes=0,
        dropped_boxes=0,
        image_long_side=(long_side, long_side, long_side),
        aspect=(1.3, 1.3),
        box_short_side=(rel10 * long_side, 2 * rel10 * long_side),
        box_relative=(rel10, 2 * rel10),
    )


def test_image_size_suggestion_follows_objects_resolution_and_machine() -> None:
    # big objects in big photos: the smallest that keeps them >= 16 px
    size, reasons = suggest_image_size(_stats(1920, 0.2), "cuda")
    assert size == 96 and reasons[-1] == "-> image_size 96"
    # small objects: larger input, capped by the machine
    assert suggest_image_size(_stats(1920, 0.02), "cuda")[0] == 800
    cpu, why = suggest_image_size(_stats(1920, 0.02), "cpu")
    assert cpu == 320 and any("CPU machine" in r for r in why)
    # never above the images' own resolution
    size, why = suggest_image_size(_stats(200, 0.01), "cuda")
    assert size == 224 and any("own resolution" in r for r in why)


def test_inspect_reports_classes_ids_and_oddities(user_coco: UserCoco) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = inspect_dataset(
            user_coco.train_images, user_coco.train_ann, user_coco.val_images, user_coco.val_ann
        )
    assert s.class_names == ("nut",) and s.category_ids == (NUT,) and s.unused_categories == ("bolt",)
    assert s.train_images == 16 and s.train_annotated == 14 and s.crowd_boxes >= 1 and s.dropped_boxes == 1
    assert s.val_images == 6 and s.val_annotated == 5  # the empty val image is a negative, still counted
    assert s.aspect[0] < 1 < s.aspect[1]


# -- data as users have it ----------------------------------------------------------------------------
def test_user_dataset_oddities_load(user_coco: UserCoco) -> None:
    with pytest.warns(UserWarning, match=r"dropped 1 degenerate.*clipped 1 boxes"):
        ds = CocoDetection(user_coco.train_images, user_coco.train_ann, TransformConfig(image_size=64))
    assert ds.label_to_cat_id == {1: NUT, 2: 11}
    items = {ds.ids[i]: ds[i] for i in range(len(ds))}
    for x, _ in items.values():  # grayscale, RGBA, JPEG: all 3-channel, letterboxed
        assert x.shape == (3, 64, 64) and torch.isfinite(x).all()
    assert not items[1000 + 7 * 6][1]["labeled"] and not items[1000 + 7 * 11][1]["labeled"]
    crowd_img = items[1000 + 7 * 2][1]
    raw = json.loads(user_coco.train_ann.read_text())
    n_plain = sum(1 for a in raw["annotations"] if a["image_id"] == 1014 and not a["iscrowd"])
    assert len(crowd_img["boxes"]) == n_plain  # the crowd region is never a target
    thin = items[1000 + 7 * 4][1]["boxes"] / items[1000 + 7 * 4][1]["scale"]
    assert any(abs(float(b[2] - b[0]) - 3.0) < 1e-3 for b in thin)  # the 3 px wide box is kept
    rgba = items[1000 + 7 * 5][0]
    assert rgba.abs().sum() > 0

    val = CocoDetection(
        user_coco.val_images,
        user_coco.val_ann,
        TransformConfig(image_size=64),
        class_names=["nut"],
        include_unlabeled=False,
        empty_as_negative=True,
    )
    assert 1007 in val.ids and val[val.ids.index(1007)][1]["labeled"]  # a negative, evaluated


def test_16_bit_image_and_reduced_jpeg_decoding_keep_original_coordinates(tmp_path: Path) -> None:
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.integers(0, 4096, size=(60, 90))).astype(np.uint16)).save(img_dir / "deep.png")
    big = rng.integers(0, 255, size=(600, 900, 3), dtype=np.uint8)
    Image.fromarray(big).save(img_dir / "photo.jpg", quality=95)
    Image.fromarray(big).save(img_dir / "photo.png")
    images = [
        {"id": 3, "file_name": "deep.png", "width": 90, "height": 60},
        {"id": 5, "file_name": "photo.jpg", "width": 900, "height": 600},
        {"id": 9, "file_name": "photo.png", "width": 900, "height": 600},
    ]
    anns = [
        {
            "id": k,
            "image_id": i,
            "category_id": 4,
            "bbox": [300.0, 150.0, 240.0, 180.0],
            "area": 1.0,
            "iscrowd": 0,
        }
        for k, i in enumerate([5, 9], start=1)
    ] + [
        {
            "id": 7,
            "image_id": 3,
            "category_id": 4,
            "bbox": [10.0, 10.0, 20.0, 20.0],
            "area": 1.0,
            "iscrowd": 0,
        }
    ]
    ann = tmp_path / "a.json"
    ann.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 4, "name": "x"}]})
    )
    ds = CocoDetection(img_dir, ann, TransformConfig(image_size=96))
    deep, t_deep = ds[ds.ids.index(3)]
    assert deep.std() > 0.1 and t_deep["orig_size"] == (60, 90)  # scaled to 8 bits, not a white image
    jpg, t_jpg = ds[ds.ids.index(5)]
    png, t_png = ds[ds.ids.index(9)]
    assert t_jpg["scale"] == t_png["scale"] == 96 / 900 and t_jpg["orig_size"] == (600, 900)
    torch.testing.assert_close(t_jpg["boxes"], t_png["boxes"])
    assert (jpg - png).abs().mean() < 0.25  # same picture (JPEG loss and DCT scaling aside)
    with Image.open(img_dir / "photo.jpg") as im:  # the draft really decodes fewer pixels
        from curriculum_search.data.coco import to_rgb

        assert max(to_rgb(im, 96).size) < 900


# -- loader ------------------------------------------------------------------------------------------
def _stream(loader: torch.utils.data.DataLoader[Any], n: int) -> list[Any]:
    it = infinite_batches(loader)
    return [next(it) for _ in range(n)]


def test_persistent_workers_give_the_main_process_stream(user_coco: UserCoco) -> None:
    def build(workers: int | None) -> torch.utils.data.DataLoader[Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = CocoDetection(
                user_coco.train_images,
                user_coco.train_ann,
                TransformConfig(image_size=64, hflip=True),
                seed=4,
            )
        return make_loader(ds, batch_size=5, shuffle=True, seed=3, num_workers=workers, drop_last=True)

    main = _stream(build(0), 9)  # 3 batches per epoch: three epochs
    par = build(2)
    assert par.persistent_workers and par.num_workers == 2
    with_workers = _stream(par, 9)
    for (xa, ta), (xb, tb) in zip(main, with_workers, strict=True):
        torch.testing.assert_close(xa, xb)
        assert [(t["index"], t["variant"]) for t in ta] == [(t["index"], t["variant"]) for t in tb]
    per_epoch = [
        {(t["index"], t["variant"]) for _, ts in main[e * 3 : e * 3 + 3] for t in ts} for e in range(3)
    ]
    assert per_epoch[0] != per_epoch[1]  # the variants follow the epoch, in the workers too
    assert build(None).num_workers == default_num_workers() >= 1


def test_a_broken_image_in_a_worker_is_one_line(tmp_path: Path) -> None:
    d = make_user_coco(tmp_path / "d", num_train=12, num_val=4)
    (d.train_images / "img_000.png").write_bytes(b"\x89PNG broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDetection(d.train_images, d.train_ann, TransformConfig(image_size=64))
    loader = make_loader(ds, batch_size=4, shuffle=False, seed=0, num_workers=1)
    with pytest.raises(LoaderDataError) as err:
        next(infinite_batches(loader))
    msg = str(err.value)
    assert "\n" not in msg and "img_000.png" in msg and "image id 1000" in msg and "Traceback" not in msg
    assert isinstance(err.value, DataError)
    with pytest.raises(LoaderDataError, match=r"img_000\.png: image id 1000: cannot read image"):
        evaluate(_Replay([]), ds, num_workers=1)  # the evaluation's workers too


# -- detections files ------------------------------------------------------------------------------
class _Replay(torch.nn.Module):
    """A 'detector' returning prepared detections per image, in the order the images come."""

    def __init__(self, per_image: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.per_image = per_image
        self.calls = 0

    def detect(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.per_image[self.calls : self.calls + len(images)]
        self.calls += len(images)
        return out


def test_write_detections_agrees_with_an_independent_coco_evaluator(
    user_coco: UserCoco, tmp_path: Path
) -> None:
    val = CocoDetection(
        user_coco.val_images,
        user_coco.val_ann,
        TransformConfig(image_size=64),
        class_names=["nut"],
        include_unlabeled=False,
        empty_as_negative=True,
    )
    rng = np.random.default_rng(0)
    per_image = []
    for i in range(len(val)):  # GT boxes jittered (some hits, some misses) + a false positive each
        _, t = val.get(i)
        boxes = t["boxes"] + torch.as_tensor(
            rng.normal(0, 1.5, size=tuple(t["boxes"].shape)), dtype=torch.float32
        )
        boxes = torch.cat([boxes, torch.tensor([[2.0, 2.0, 20.0, 16.0]])])
        scores = torch.as_tensor(rng.uniform(0.2, 1.0, size=len(boxes)), dtype=torch.float32)
        per_image.append(
            {"boxes": boxes, "scores": scores, "labels": torch.ones(len(boxes), dtype=torch.int64)}
        )
    path = tmp_path / "detections_val.json"
    res = write_detections(_Replay(per_image), val, path, batch_size=4)
    assert 0.2 < res.ap < 0.95  # a meaningful AP, not 0 or 1
    assert res.num_images == 6  # the val image without annotations is evaluated (its FP counts)
    written = json.loads(path.read_text())
    assert {d["category_id"] for d in written} == {NUT} and len(written) == res.num_detections
    assert abs(_fcoco_ap(user_coco.val_ann, path) - res.ap) < 1e-3
    again = evaluate(_Replay(per_image), val, batch_size=3, num_workers=1)  # decoded in a worker
    assert again.ap == res.ap


# -- offline honesty ---------------------------------------------------------------------------------
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Empty weight caches and no network."""
    import socket

    import huggingface_hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def no_network(*a: Any, **k: Any) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_pretrained_weights_offline_stop_before_training_with_one_line(
    kind: str,
    user_coco: UserCoco,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    space_file = tmp_path / "s.yaml"
    assert cli([*_init_args(user_coco), "-o", str(space_file)]) == 0
    d = yaml.safe_load(_tiny(space_file, space_file).read_text())
    if kind == "torchvision":
        d["teachers"]["tv"] = {
            "spec": {
                "arch": "fcos",
                "backbone": "torchvision",
                "weights": "torchvision:DEFAULT",
                "num_classes": 90,
            }
        }
        field, expect = "teachers.tv.spec.weights", "fcos_resnet50_fpn_coco-99b0c9b7.pth"
    else:
        d["student"]["weights"] = "timm"
        field, expect = "student.weights", "huggingface.co"
    space_file.write_text(yaml.safe_dump(d))
    _offline(monkeypatch, tmp_path)
    capsys.readouterr()
    studies = tmp_path / "studies"
    assert cli(["run", "--space", str(space_file), "--studies-dir", str(studies), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and expect in err and "checkpoint" in err
    assert not (studies / "_zoo").exists()  # stopped before any teacher was trained


def test_pretrained_weights_in_the_cache_need_no_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curriculum_search.models.pretrained import ensure_pretrained
    from curriculum_search.models.spec import DetectorSpec

    _offline(monkeypatch, tmp_path)
    spec = DetectorSpec(
        arch="retinanet", backbone="torchvision", num_classes=90, weights="torchvision:DEFAULT"
    )
    with pytest.raises(ConfigError, match=r"teachers\.x\.spec\.weights"):
        ensure_pretrained([("teachers.x.spec", spec)])
    ckpt = tmp_path / "torch_home" / "hub" / "checkpoints" / "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"cached")
    assert ensure_pretrained([("teachers.x.spec", spec)]) == 0
