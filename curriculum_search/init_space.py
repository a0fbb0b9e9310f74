"""``init``: from a user's COCO folder to a validated, commented search-space file.

:func:`inspect_dataset` reads both splits with the same checks training uses
(:class:`~curriculum_search.data.coco.CocoDetection`) and additionally opens every image header,
so a missing, unreadable or wrongly sized image stops ``init`` with one line naming the file and
the image id instead of stopping a training run hours later. It returns :class:`DatasetStats`:
classes with their annotation counts, image and box sizes.

:func:`suggest_image_size` turns the statistics into a square input size with the reasoning, and
:func:`plan_space` into a :class:`SpacePlan` (student, a teacher pool that trains offline, budgets
scaled to the dataset and to the machine); :func:`render_space` writes it as commented YAML that
:func:`~curriculum_search.search.space.load_space` accepts as is.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from curriculum_search.data.coco import CocoDetection
from curriculum_search.data.transforms import TransformConfig
from curriculum_search.errors import ConfigError, DataError

Machine = Literal["cpu", "cuda"]

#: Smallest object side (input px) the suggested size aims for: two strides of the finest FPN level.
MIN_OBJECT_PX = 16
#: Largest input size suggested per machine (a CPU trains a 320 px detector slowly already).
MAX_SIZE = {"cpu": 320, "cuda": 1024}
MIN_SIZE = 64


@dataclass(frozen=True)
class DatasetStats:
    """What ``init`` learned from the two splits (sizes in original pixels)."""

    train_images: int
    train_annotated: int
    val_images: int
    val_annotated: int
    class_names: tuple[str, ...]  # classes with at least one (non-crowd) training box, by category id
    category_ids: tuple[int, ...]
    boxes_per_class: tuple[int, ...]
    unused_categories: tuple[str, ...]  # categories of the JSON without training boxes (left out)
    crowd_boxes: int
    dropped_boxes: int
    image_long_side: tuple[float, float, float]  # min, median, max of max(w, h)
    aspect: tuple[float, float]  # min, max of w / h
    box_short_side: tuple[float, float]  # 10th percentile, median of min(box w, box h)
    box_relative: tuple[float, float]  # 10th percentile, median of box short side / image long side
    test_images: int = 0  # 0: no test set


@dataclass(frozen=True)
class SpacePlan:
    """The choices written into the space file, with the reasons printed by ``init``."""

    name: str
    machine: Machine
    image_size: int
    reasons: tuple[str, ...]
    stats: DatasetStats
    paths: dict[str, str]
    batch_size: int
    teacher_iterations: int
    proxy_iterations: int
    proxy_train: int
    proxy_val: int
    full_iterations: int
    trials: int
    notes: tuple[str, ...] = field(default_factory=tuple)


# -- inspection ----------------------------------------------------------------------------------
def _check_headers(ds: CocoDetection) -> None:
    """Open every image header: unreadable files and sizes differing from the JSON stop here."""
    for i, image_id in enumerate(ds.ids):
        path = ds.image_path(i)
        try:
            with Image.open(path) as im:
                size = im.size
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(
                path, f"image id {image_id}", f"cannot read image ({type(exc).__name__}: {exc})"
            ) from None
        want = ds.coco.imgs[image_id]
        if size != (want["width"], want["height"]):
            raise DataError(
                ds.ann_file,
                f"image id {image_id}",
                f"{path.name} is {size[0]}x{size[1]} px but the JSON says {want['width']}x{want['height']}",
            )


def _load_split(images: Path, ann: Path, names: list[str] | None, negatives: bool) -> CocoDetection:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(
            images,
            ann,
            TransformConfig(image_size=64),
            class_names=names,
            include_unlabeled=not negatives,
            empty_as_negative=negatives,
        )
    for w in caught:
        print(f"note: {w.message}")
    _check_headers(ds)
    return ds


def _categories(ann: Path) -> list[dict[str, object]]:
    data = json.loads(ann.read_text(encoding="utf-8"))
    return sorted(data["categories"], key=lambda c: int(c["id"]))


def inspect_dataset(
    train_images: Path,
    train_ann: Path,
    val_images: Path,
    val_ann: Path,
    test_images: Path | None = None,
    test_ann: Path | None = None,
) -> DatasetStats:
    """Validate the splits (every image header opened) and measure them.

    Raises:
        DataError: one line naming the file and the image/annotation id at fault, or a split
            without any usable box.
    """
    train = _load_split(train_images, train_ann, None, negatives=False)
    counts: Counter[int] = Counter()
    crowd = 0
    for ann in train.coco.dataset["annotations"]:
        if ann.get("iscrowd", 0):
            crowd += 1
        else:
            counts[int(ann["category_id"])] += 1
    cats = _categories(train_ann)
    used = [c for c in cats if counts[int(c["id"])] > 0]  # type: ignore[call-overload]
    if not used:
        raise DataError(
            train_ann, "annotations", "no usable (non-crowd, non-degenerate) box in the training split"
        )
    names = [str(c["name"]) for c in used]
    unused = tuple(str(c["name"]) for c in cats if counts[int(c["id"])] == 0)  # type: ignore[call-overload]
    val = _load_split(val_images, val_ann, names, negatives=True)
    evaluated = [(val, val_ann)]
    test = None
    if test_images is not None and test_ann is not None:
        test = _load_split(test_images, test_ann, names, negatives=True)
        evaluated.append((test, test_ann))
    for ds, ann_file in evaluated:
        if not [a for a in ds.coco.dataset["annotations"] if not a.get("iscrowd", 0)]:
            raise DataError(
                ann_file, "annotations", f"no box of the training classes ({', '.join(names)}) to evaluate on"
            )
    longs, aspects = [], []
    for img in train.coco.dataset["images"]:
        longs.append(max(img["width"], img["height"]))
        aspects.append(img["width"] / img["height"])
    short, rel = [], []
    for a in train.coco.dataset["annotations"]:
        if a.get("iscrowd", 0) or a["category_id"] not in train.cat_id_to_label:
            continue
        img = train.coco.imgs[a["image_id"]]
        s = min(a["bbox"][2], a["bbox"][3])
        short.append(s)
        rel.append(s / max(img["width"], img["height"]))
    annotated_train = sum(1 for i in range(len(train)) if train.is_labeled(i))
    val_annotated = len({a["image_id"] for a in val.coco.dataset["annotations"]})
    return DatasetStats(
        train_images=len(train),
        train_annotated=annotated_train,
        val_images=len(val),
        val_annotated=val_annotated,
        class_names=tuple(names),
        category_ids=tuple(int(c["id"]) for c in used),  # type: ignore[call-overload]
        boxes_per_class=tuple(counts[int(c["id"])] for c in used),  # type: ignore[call-overload]
        unused_categories=unused,
        crowd_boxes=crowd,
        dropped_boxes=train.dropped_boxes + val.dropped_boxes,
        image_long_side=(float(min(longs)), float(np.median(longs)), float(max(longs))),
        aspect=(float(min(aspects)), float(max(aspects))),
        box_short_side=(float(np.percentile(short, 10)), float(np.median(short))),
        box_relative=(float(np.percentile(rel, 10)), float(np.median(rel))),
        test_images=len(test) if test is not None else 0,
    )


# -- choices ---------------------------------------------------------------------------------------
def _round32(x: float) -> int:
    return int(max(32, math.ceil(x / 32.0) * 32))


def suggest_image_size(stats: DatasetStats, machine: Machine) -> tuple[int, list[str]]:
    """Square input size: small objects big enough, never above the images' own resolution.

    Letterboxing scales an image by ``S / long_side``, so a box of relative size ``r`` (short side
    over the image's long side) becomes ``r * S`` input pixels. The size aims at the 10th-percentile
    box reaching :data:`MIN_OBJECT_PX`, is capped by the median image long side (upsampling adds
    cost, not detail) and by the machine (:data:`MAX_SIZE`), and is a multiple of 32.
    """
    r10 = stats.box_relative[0]
    want = MIN_OBJECT_PX / max(r10, 1e-6)
    native = _round32(stats.image_long_side[1])
    cap = MAX_SIZE[machine]
    size = min(_round32(want), native, cap)
    size = max(size, min(MIN_SIZE, native))
    reasons = [
        f"images: long side {stats.image_long_side[0]:.0f}-{stats.image_long_side[2]:.0f} px "
        f"(median {stats.image_long_side[1]:.0f}), width/height {stats.aspect[0]:.2f}-{stats.aspect[1]:.2f}; "
        "each is letterboxed into a square (long side = the input size)",
        f"boxes: short side median {stats.box_short_side[1]:.1f} px, 10% are under "
        f"{stats.box_short_side[0]:.1f} px ({100 * r10:.1f}% of their image's long side)",
        f"so that those reach {MIN_OBJECT_PX} input px the input would be {_round32(want)} px",
    ]
    if size == native and _round32(want) > native:
        reasons.append(
            f"capped at {native} px, the median image's own resolution (upsampling adds cost, not detail)"
        )
    if size == cap and min(_round32(want), native) > cap:
        reasons.append(
            f"capped at {cap} px on a {machine.upper()} machine (training cost grows with the square of the size)"
        )
    reasons.append(f"-> image_size {size}")
    if size * r10 < 8:
        reasons.append(
            f"warning: the smallest 10% of the objects are under 8 px at {size} px; the finest feature "
            "level has stride 8, expect them to be found poorly"
        )
    return size, reasons


def _round_to(x: float, step: int) -> int:
    return int(max(step, round(x / step) * step))


def plan_space(
    stats: DatasetStats,
    paths: dict[str, Path],
    *,
    name: str,
    machine: Machine,
    image_size: int | None = None,
) -> SpacePlan:
    """Budgets from the dataset size and the machine.

    Zoo teachers train about 30 epochs (GPU: 50), clamped to 200-3000 iterations on a CPU and
    500-20000 on a GPU; the proxy is a third of that (at least 60 iterations) on at most 256 (GPU:
    2000) training and 64 (GPU: 500) validation images; the full run gets the teachers' length.
    """
    size, reasons = suggest_image_size(stats, machine)
    if image_size is not None:
        if image_size < 32 or image_size % 32:
            raise ConfigError(None, "--image-size", f"must be a multiple of 32, >= 32, got {image_size}")
        reasons.append(f"--image-size {image_size} given: using it instead of {size}")
        size = image_size
    batch = 8 if machine == "cpu" else 16
    epochs = 30 if machine == "cpu" else 50
    lo, hi = (200, 3000) if machine == "cpu" else (500, 20000)
    per_epoch = max(1.0, stats.train_images / batch)
    teacher_iters = int(min(hi, max(lo, _round_to(epochs * per_epoch, 50))))
    proxy_iters = max(60, _round_to(teacher_iters / 3, 20))
    notes = []
    if stats.unused_categories:
        notes.append(f"left out categories without a training box: {', '.join(stats.unused_categories)}")
    if stats.train_annotated < stats.train_images:
        notes.append(
            f"{stats.train_images - stats.train_annotated} training image(s) have no annotation: they are "
            "treated as unlabeled (trained on by pseudo-label stages only), not as images without objects"
        )
    return SpacePlan(
        name=name,
        machine=machine,
        image_size=size,
        reasons=tuple(reasons),
        stats=stats,
        paths={k: str(Path(v).resolve()) for k, v in paths.items()},
        batch_size=batch,
        teacher_iterations=teacher_iters,
        proxy_iterations=proxy_iters,
        proxy_train=min(stats.train_images, 256 if machine == "cpu" else 2000),
        proxy_val=min(stats.val_images, 64 if machine == "cpu" else 500),
        full_iterations=teacher_iters,
        trials=12 if machine == "cpu" else 40,
        notes=tuple(notes),
    )


# -- rendering ---------------------------------------------------------------------------------------
def _q(value: object) -> str:
    return json.dumps(value)  # JSON strings/lists are valid YAML flow values


def render_space(plan: SpacePlan) -> str:
    """The commented YAML text of ``plan`` (:func:`load_space` reads it without edits)."""
    s = plan.stats
    names = _q(list(s.class_names))
    n = len(s.class_names)
    size = plan.image_size
    gpu = plan.machine == "cuda"
    student_bb, student_fpn = ("mobilenetv3_large_100", 64) if gpu else ("mobilenetv3_small_050", 32)
    cnn = (
        [("cnn_small", "resnet18", 64), ("cnn_large", "resnet50", 128)]
        if gpu
        else [
            ("cnn_small", "resnet10t", 48),
            ("cnn_large", "resnet18", 64),
        ]
    )
    ti = plan.teacher_iterations
    pi = plan.proxy_iterations
    ev = max(1, pi // 4)
    classes_line = ", ".join(
        f"{nm} (id {cid}, {k} boxes)"
        for nm, cid, k in zip(s.class_names, s.category_ids, s.boxes_per_class, strict=True)
    )
    lines = [
        f"# Search space for {plan.name}, written by `python -m curriculum_search init`.",
        "#",
        f"# Data: {s.train_images} training images ({s.train_annotated} annotated), {s.val_images} validation images.",
        f"# Classes: {classes_line}.",
        "# Detections are written with these category ids (`predict`, full/detections_<split>.json).",
        *[f"# Note: {note}" for note in plan.notes],
        "#",
        "# Image size, as init reasoned:",
        *[f"#   {r}" for r in plan.reasons],
        "#",
        f"# Budgets sized for a {'GPU' if gpu else 'CPU-only'} machine: zoo teachers {ti} iterations "
        f"(about {ti * plan.batch_size / max(1, s.train_images):.0f} epochs),",
        f"# proxy trials {pi} iterations, the full run {plan.full_iterations} iterations, {plan.trials} trials.",
        "# Everything here trains offline (no download). Run it with",
        "#   python -m curriculum_search run --space THIS_FILE",
        "# then `python -m curriculum_search predict --weights studies/NAME/full/student.pt IMAGES -o out/`.",
        "# Keys are documented in space/default.yaml; unknown keys or bad values stop with one line.",
        f"name: {plan.name}",
        "seed: 0",
        "",
        "data:",
        "  kind: coco",
        f"  train_images: {_q(plan.paths['train_images'])}",
        f"  train_ann: {_q(plan.paths['train_ann'])}",
        f"  val_images: {_q(plan.paths['val_images'])}",
        f"  val_ann: {_q(plan.paths['val_ann'])}",
        *(
            [
                f"  test_images: {_q(plan.paths['test_images'])}   # the report split (selection uses val)",
                f"  test_ann: {_q(plan.paths['test_ann'])}",
            ]
            if "test_images" in plan.paths
            else []
        ),
        "  unlabeled_dir: null   # a folder of extra images without annotations (pseudo-label stages)",
        f"  image_size: {size}",
        "  hflip: true            # set false when left/right matters for your classes",
        "",
        "student:   # the detector you ship; random init, so it trains offline",
        "  arch: fcos",
        f"  backbone: {student_bb}",
        "  # weights: timm       # ImageNet-pretrained backbone: usually better, needs a download once",
        f"  num_classes: {n}",
        f"  class_names: {names}",
        f"  fpn_channels: {student_fpn}",
        f"  image_size: {size}",
        "",
        "teachers:  # the pool, trained by the tool on your data (`zoo:`), no download needed",
    ]
    for tname, bb, fpn in cnn:
        lines += [
            f"  {tname}:",
            "    zoo:",
            f"      spec: {{arch: fcos, backbone: {bb}, num_classes: {n}, class_names: {names}, fpn_channels: {fpn}, image_size: {size}}}",
            f"      iterations: {ti}",
            "      lr: 0.003",
            f"      batch_size: {plan.batch_size}",
        ]
    lines += [
        "  pvt:  # the transformer teacher: PVT-v2-b0; transformers from scratch want lr 1e-3 (3e-3 halves its AP)",
        "    zoo:",
        f"      spec: {{arch: fcos, backbone: pvt_v2_b0, num_classes: {n}, class_names: {names}, fpn_channels: 64, image_size: {size}}}",
        f"      iterations: {ti}",
        "      lr: 0.001",
        f"      batch_size: {plan.batch_size}",
        "  # Pretrained alternatives (downloaded once into the torch hub / Hugging Face cache; on a",
        "  # machine without internet copy the files there first, or train them elsewhere and use",
        "  # `checkpoint: path/model.pt`). Starting a teacher from ImageNet weights:",
        "  # cnn_pretrained:",
        "  #   zoo:",
        f"  #     spec: {{arch: fcos, backbone: resnet50, weights: timm, num_classes: {n}, class_names: {names}, fpn_channels: 128, image_size: {size}}}",
        f"  #     iterations: {ti}",
        "  #     lr: 0.001",
        "  # A torchvision COCO-pretrained detector as is (useful only when your class names are COCO",
        "  # names such as person, car, dog: classes are matched to the student's by name):",
        "  # tv_fcos:",
        '  #   spec: {arch: fcos, backbone: torchvision, weights: "torchvision:DEFAULT", num_classes: 90,',
        f"  #          fpn_channels: 256, image_size: {size}, class_names: [the 90 names of space/coco_torchvision.yaml]}}",
        "",
        f"proxy: {{iterations: {pi}, train_subset: {plan.proxy_train}, val_subset: {plan.proxy_val}, image_size: null, eval_every: {ev}, seeds: 1}}",
        f"full: {{iterations: {plan.full_iterations}, train_subset: null, val_subset: null, eval_every: {max(1, plan.full_iterations // 4)}, seeds: 1}}",
        "",
        "search:",
        "  n_stages: [1, 3]",
        "  teachers: null",
        "  min_stage_fraction: 0.15",
        "  feature_losses: [mgd, cwd, mse, none]",
        "  response: [true, false]",
        "  pseudo: [false, true]",
        "  feature_weight: [0.25, 4.0]",
        "  cls_weight: [0.1, 4.0]",
        "  box_weight: [0.1, 4.0]",
        "  temperature: [1.0, 4.0]",
        "  decay: [linear, cosine, step, constant]",
        "  decay_floor: [0.0, 0.5]",
        "  lr: [0.0005, 0.005]",
        "",
        "sampler: {name: tpe, params: {n_startup_trials: 4}}",
        "pruner: {name: median, warmup_steps: null, params: {n_startup_trials: 4}}",
        f"trials: {plan.trials}",
        "timeout_s: null",
        "constraints: {max_proxy_cost: null}",
        *_selection_lines(plan),
        "",
        "train:",
        f"  batch_size: {plan.batch_size}",
        "  optimizer: adamw",
        "  lr: 0.002",
        "  weight_decay: 0.0001",
        f"  warmup_iterations: {min(50, max(1, pi // 4))}",
        "  schedule: cosine",
        "  min_lr_ratio: 0.05",
        "  grad_clip: 10.0",
        f"  amp: {'true' if gpu else 'false'}",
        "  eval_every: 0",
        f"  checkpoint_every: {max(10, pi // 2)}",
        "  num_workers: null     # data-loading processes; null = CPUs - 1 (at most 8), 0 = none",
        "  device: auto",
        "",
    ]
    return "\n".join(lines)


def init_space(
    train_images: Path,
    train_ann: Path,
    val_images: Path,
    val_ann: Path,
    *,
    output: Path | None = None,
    name: str | None = None,
    machine: Machine | None = None,
    image_size: int | None = None,
    force: bool = False,
    test_images: Path | None = None,
    test_ann: Path | None = None,
) -> tuple[Path, SpacePlan]:
    """Inspect the dataset, plan and write the space file, then load it back to validate it.

    ``output`` defaults to ``space/<name>.yaml``; an existing file is kept unless ``force``.

    Raises:
        DataError: the dataset is unusable (one line naming the file and the id).
        ConfigError: the output exists (without ``force``) or ``image_size`` is invalid.
    """
    from curriculum_search.search.space import load_space
    from curriculum_search.utils.io import atomic_write_text

    name = name or default_name(train_ann, output)
    output = output if output is not None else Path("space") / f"{name}.yaml"
    if output.exists() and not force:
        raise ConfigError(output, None, "exists already; choose another -o or pass --force to overwrite it")
    if (test_images is None) != (test_ann is None):
        raise ConfigError(
            None, "--test-ann" if test_ann is None else "--test-images", "give both test options or neither"
        )
    stats = inspect_dataset(train_images, train_ann, val_images, val_ann, test_images, test_ann)
    paths = {
        "train_images": train_images,
        "train_ann": train_ann,
        "val_images": val_images,
        "val_ann": val_ann,
    }
    if test_images is not None and test_ann is not None:
        paths.update(test_images=test_images, test_ann=test_ann)
    plan = plan_space(stats, paths, name=name, machine=machine or detect_machine(), image_size=image_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, render_space(plan))
    load_space(output)  # the file must load as written; a failure here is a bug of init
    return output, plan


def _selection_lines(plan: SpacePlan) -> list[str]:
    gpu = plan.machine == "cuda"
    where = (
        "the validation set; the shipped student is reported on the test set"
        if "test_images" in plan.paths
        else "20% of the training images, carved out and never trained on; the shipped student is "
        "reported on the validation set"
    )
    seeds = (2, 3) if gpu else (1, 2)
    return [
        "# selection: what ships. The search's best curricula race the baselines on common seeds",
        f"# (half length with {seeds[0]} seed(s), then full length with {seeds[1]}); a challenger wins only",
        "# when the lower 90% bound of its paired AP difference is > 0. Selection scores on",
        f"# {where}.",
        f"selection: {{shortlist: {3 if gpu else 2}, rungs: [0.5, 1.0], seeds: [{seeds[0]}, {seeds[1]}], "
        "promote: 1, margin: 0.0, confidence: 0.9, lr_matched: true, holdout: 0.2}",
    ]


_NAME_SUB = re.compile(r"[^A-Za-z0-9_.-]+")


def default_name(train_ann: Path, output: Path | None) -> str:
    """Study name: the output file's stem, else the dataset folder's name."""
    base = output.stem if output is not None else (train_ann.resolve().parent.parent.name or "mydata")
    name = _NAME_SUB.sub("-", base).strip("-._") or "mydata"
    return name if name[0].isalnum() else f"d{name}"


def detect_machine() -> Machine:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = [
    "DatasetStats",
    "SpacePlan",
    "default_name",
    "detect_machine",
    "init_space",
    "inspect_dataset",
    "plan_space",
    "render_space",
    "suggest_image_size",
]
