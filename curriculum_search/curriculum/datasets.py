"""Turn a recipe's :class:`DataConfig` into train/val datasets (synthetic default or COCO files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import ConcatDataset, Dataset, Subset

from curriculum_search.curriculum.recipe import DataConfig, resolve_path
from curriculum_search.data import CocoDetection, TransformConfig, ensure_synthetic, labeled_fraction, subset
from curriculum_search.data.coco import base_dataset
from curriculum_search.errors import DataError


@dataclass
class Datasets:
    """Train (augmented, cacheable variants) and val (deterministic) datasets of a recipe."""

    train: Dataset  # type: ignore[type-arg]
    val: Dataset  # type: ignore[type-arg]
    class_names: tuple[str, ...]
    fingerprint: str

    @property
    def train_base(self) -> CocoDetection:
        return base_dataset(self.train)  # type: ignore[return-value]


def build_datasets(
    cfg: DataConfig,
    *,
    class_names: tuple[str, ...] | None,
    cache_root: Path,
    base_dir: Path,
    source: str | Path | None = None,
    seed: int = 0,
) -> Datasets:
    """Build the datasets; relative COCO paths resolve against ``base_dir`` (and may not leave it)."""
    if cfg.kind == "synthetic":
        paths = ensure_synthetic(cfg.synthetic, cache_root / "data")
        train_images, train_ann = paths.train_images, paths.train_ann
        val_images, val_ann = paths.val_images, paths.val_ann
        test_images: Path | None = None
        test_ann: Path | None = None
        unlabeled = paths.unlabeled_dir
    else:

        def res(key: str) -> Path:
            return resolve_path(str(getattr(cfg, key)), base_dir, source=source, field_name=f"data.{key}")

        train_images, train_ann, val_images, val_ann = (
            res(k) for k in ("train_images", "train_ann", "val_images", "val_ann")
        )
        test_images, test_ann = (res("test_images"), res("test_ann")) if cfg.has_test else (None, None)
        unlabeled = res("unlabeled_dir") if cfg.unlabeled_dir else None
    names = list(class_names) if class_names else None
    train_tf = TransformConfig(image_size=cfg.image_size, hflip=cfg.hflip)
    val_tf = TransformConfig(image_size=cfg.image_size)
    train = CocoDetection(
        train_images, train_ann, train_tf, class_names=names, unlabeled_dir=unlabeled, seed=seed
    )
    names = list(train.class_names)
    _check_boxes(train, train_ann, "training")
    train_ds: Dataset = train  # type: ignore[type-arg]
    held: list[int] = (
        holdout_positions(train, cfg.holdout, cfg.subset_seed) if cfg.holdout is not None else []
    )
    if held:
        gone = set(held)
        train_ds = Subset(train, [i for i in range(len(train)) if i not in gone])
    val_ds: Dataset  # type: ignore[type-arg]
    if cfg.eval_split == "holdout":
        ids = {train.ids[i] for i in held}
        full = CocoDetection(train_images, train_ann, val_tf, class_names=names, include_unlabeled=False)
        val_ds = Subset(full, [i for i, image_id in enumerate(full.ids) if image_id in ids])
    elif cfg.eval_split == "test":
        assert test_images is not None and test_ann is not None
        val_ds = CocoDetection(
            test_images, test_ann, val_tf, class_names=names, include_unlabeled=False, empty_as_negative=True
        )
    else:  # an evaluation image without annotations is a negative: detections there are FPs
        val_ds = CocoDetection(
            val_images, val_ann, val_tf, class_names=names, include_unlabeled=False, empty_as_negative=True
        )
    if isinstance(val_ds, CocoDetection):  # a holdout split is checked when it is scored (evaluate)
        _check_boxes(val_ds, val_ds.ann_file, "validation")
    if cfg.train_subset is not None:
        train_ds = subset(train_ds, cfg.train_subset, cfg.subset_seed)
    if cfg.val_subset is not None:
        val_ds = subset(val_ds, cfg.val_subset, cfg.subset_seed + 1)
    fp = train.fingerprint
    return Datasets(train_ds, val_ds, tuple(train.class_names), fp)


def holdout_positions(train: CocoDetection, size: int | float, seed: int) -> list[int]:
    """Positions of the labeled training images carved out as the holdout split (seeded, sorted)."""
    labeled = train.labeled_indices()
    if not labeled:
        return []
    chosen = subset(Subset(train, labeled), size, seed + 2).indices
    return sorted(labeled[int(j)] for j in chosen)


def _check_boxes(ds: CocoDetection, ann_file: Path, role: str) -> None:
    """A split without a single usable box cannot train (nothing to learn) or score (AP undefined,
    pycocotools' -1): one line naming the file instead of a traceback or a meaningless AP."""
    if len(ds) == 0:
        raise DataError(ann_file, "annotations", f"the {role} set has no annotated image")
    if ds.coco.getAnnIds():
        return
    if ds.dropped_boxes:
        why = f"all {ds.dropped_boxes} boxes were dropped as degenerate or outside their image"
    else:
        why = "it has no annotation"
    what = "nothing to learn from" if role == "training" else "AP would be undefined"
    raise DataError(ann_file, "annotations", f"the {role} set has no usable box ({why}): {what}")


def stage_dataset(train: Dataset, *, gt_fraction: float, use_unlabeled: bool, seed: int) -> Dataset:  # type: ignore[type-arg]
    """The images a stage trains on: a fraction of the labeled ones (+ unlabeled for pseudo labels)."""
    base = base_dataset(train)
    indices = list(train.indices) if isinstance(train, Subset) else list(range(len(base)))  # type: ignore[arg-type]
    labeled = [i for i in indices if base.is_labeled(i)]  # type: ignore[attr-defined]
    unlabeled = [i for i in indices if not base.is_labeled(i)]  # type: ignore[attr-defined]
    parts: list[Dataset] = []  # type: ignore[type-arg]
    if labeled:
        lab = Subset(base, labeled)
        parts.append(labeled_fraction(lab, gt_fraction, seed) if gt_fraction < 1 else lab)
    if use_unlabeled and unlabeled:
        parts.append(Subset(base, unlabeled))
    if not parts:
        raise ValueError("the stage has no images to train on")
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
