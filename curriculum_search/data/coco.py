"""COCO-format detection dataset, validated up front, plus seeded subsets.

:class:`CocoDetection` reads a COCO JSON file, checks it completely at construction (schema, ids,
image files on disk) and raises a one-line :class:`~curriculum_search.errors.DataError` naming the
file and the offending entry. Boxes are clipped to the image; degenerate ones (width or height
``<= 1`` px after clipping, which includes boxes entirely outside the image) are dropped and reported
in a single warning. Crowd annotations never become targets.

An image with no annotation at all in the JSON is *unlabeled* (``labeled=False``, empty boxes), as
is every image of ``unlabeled_dir`` (negative image ids ``-1, -2, ...`` in sorted file-name order).
Such images may only be trained on with pseudo labels. An evaluation set passes
``empty_as_negative=True`` instead: there an image without annotations is a labeled image with no
object (as in COCO's own evaluation, detections on it are false positives).

Pixels: any PIL mode is accepted (grayscale, RGBA, palette, 16-bit): alpha is dropped, 16-bit and
float images are scaled to 8 bits by their maximum value. JPEGs much larger than the model input are
decoded at a reduced DCT scale (``Image.draft``), which is several times faster for photos; boxes
still refer to the original pixels. A file that cannot be read stops with a one-line error naming
the file and the image id.

Item ``i`` is ``(image (3, S, S), target)`` with the target keys of ``docs/ARCHITECTURE.md``. The
augmentation variant of ``dataset[i]`` is drawn from ``numpy.random.default_rng([seed, epoch, i])``,
so it depends only on ``(seed, epoch, index)``; :meth:`CocoDetection.get` returns a given variant
with the same pixels (colour jitter uses ``default_rng([seed, epoch, i, 1])`` in both cases).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset, Subset

from curriculum_search.data.transforms import TransformConfig
from curriculum_search.errors import DataError
from curriculum_search.utils.io import sha256_file, stable_hash

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_MAX_IDS_SHOWN = 10


@dataclass(frozen=True)
class _Record:
    """One dataset item before loading: where its pixels are and its cleaned ground truth."""

    image_id: int
    path: Path
    width: int | None  # None: not given (unlabeled folder) -> read from the file on load
    height: int | None
    boxes: np.ndarray  # (N, 4) float32 xyxy original px, already clipped
    labels: np.ndarray  # (N,) int64 in 1..C
    labeled: bool


class CocoDetection(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """A COCO detection dataset producing letterboxed tensors and torchvision-style targets.

    Args:
        images_dir: Folder the ``file_name`` entries of the JSON are relative to.
        ann_file: COCO JSON with ``images``, ``annotations`` and ``categories``.
        transform: Letterbox/augmentation settings.
        class_names: Classes to learn, in label order (``class_names[i]`` is label ``i + 1``). Defaults
            to the JSON categories sorted by id. Annotations of other categories are ignored.
        include_unlabeled: Keep items without annotations (``labeled=False``). When False, images of
            the JSON without annotations are skipped and ``unlabeled_dir`` must be ``None``.
        empty_as_negative: Images of the JSON without annotations are labeled images with no
            object (an evaluation set), not unlabeled ones.
        unlabeled_dir: Optional folder whose image files are added as unlabeled items.
        seed: Seed of the per-item variant draws.

    Attributes:
        coco: ``pycocotools`` index of the *cleaned* ground truth (original px, clipped boxes,
            degenerate boxes removed, only the categories of ``class_names``, crowd regions kept with
            ``iscrowd=1``), ready for ``COCOeval`` after mapping detections back with ``box / scale``.
        class_names, label_to_cat_id, cat_id_to_label, ids (image id of each item, in item order),
        fingerprint (cache key of the items' content), cacheable, num_variants, ann_file, images_dir,
        dropped_boxes (count), dropped_box_ids, clipped_boxes (count), epoch, seed.
    """

    def __init__(
        self,
        images_dir: str | Path,
        ann_file: str | Path,
        transform: TransformConfig,
        class_names: Sequence[str] | None = None,
        include_unlabeled: bool = True,
        unlabeled_dir: str | Path | None = None,
        seed: int = 0,
        empty_as_negative: bool = False,
    ) -> None:
        if unlabeled_dir is not None and not include_unlabeled:
            raise ValueError("unlabeled_dir was given but include_unlabeled is False")
        self.images_dir = Path(images_dir)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        data = _read_json(self.ann_file)
        images, annotations, categories = _check_schema(data, self.ann_file)
        self.class_names, self.cat_id_to_label = _resolve_classes(categories, class_names, self.ann_file)
        self.label_to_cat_id = {label: cat for cat, label in self.cat_id_to_label.items()}
        sizes = _image_sizes(images, self.images_dir, self.ann_file)
        cleaned = _clean_annotations(annotations, images, categories, sizes, self.ann_file)
        self.dropped_box_ids = cleaned.dropped_ids
        self.dropped_boxes = len(cleaned.dropped_ids)
        self.clipped_boxes = cleaned.clipped
        if cleaned.dropped_ids or cleaned.clipped:
            warnings.warn(_drop_summary(self.ann_file, cleaned.dropped_ids, cleaned.clipped), stacklevel=2)

        annotated = {img["id"] for img in images} if empty_as_negative else cleaned.annotated
        records = self._records(images, sizes, cleaned.kept, annotated, include_unlabeled)
        if unlabeled_dir is not None:
            for k, img in enumerate(images):
                if img["id"] < 0:
                    raise DataError(
                        self.ann_file,
                        _entry("images", k, img),
                        "negative image ids are reserved for unlabeled_dir",
                    )
            records.extend(_folder_records(Path(unlabeled_dir), self.ann_file))
        self._records_list = records
        self.ids = [r.image_id for r in records]
        self.coco = self._build_coco(data, images, sizes, cleaned.kept, categories)
        self.fingerprint = stable_hash(
            {
                "ann_sha256": sha256_file(self.ann_file),
                "transform": transform.fingerprint,
                "class_names": list(self.class_names),
                "ids": self.ids,
                "unlabeled": [r.path.name for r in records if r.image_id < 0],
            }
        )

    # ------------------------------------------------------------------ public API
    @property
    def num_classes(self) -> int:
        """Number of object classes ``C`` (labels are ``1..C``)."""
        return len(self.class_names)

    @property
    def cacheable(self) -> bool:
        """True when items are a pure function of ``(index, variant)`` (see :class:`TransformConfig`)."""
        return self.transform.cacheable

    @property
    def num_variants(self) -> int:
        """Number of augmentation variants an item can be returned in."""
        return self.transform.num_variants

    def __len__(self) -> int:
        return len(self._records_list)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose variant/jitter draws ``__getitem__`` uses."""
        self.epoch = int(epoch)

    def is_labeled(self, index: int) -> bool:
        """Whether item ``index`` has ground-truth annotations."""
        return self._records_list[index].labeled

    def labeled_indices(self) -> list[int]:
        """Positions of the labeled items, ascending."""
        return [i for i, r in enumerate(self._records_list) if r.labeled]

    def image_path(self, index: int) -> Path:
        """File holding the pixels of item ``index``."""
        return self._records_list[index].path

    def draw_variant(self, index: int) -> int:
        """The variant ``dataset[index]`` uses in the current epoch."""
        if self.num_variants == 1:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, self._normalise(index)])
        return int(rng.integers(self.num_variants))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.get(index, self.draw_variant(index))

    def get(self, index: int, variant: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
        """Item ``index`` in augmentation ``variant`` (0 = none, 1 = mirrored when ``hflip``)."""
        index = self._normalise(index)
        rec = self._records_list[index]
        image, (width, height) = self._load(rec)
        jitter_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        tensor, boxes, scale = self.transform.apply(
            image, rec.boxes, variant, jitter_rng, orig_size=(width, height)
        )
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.as_tensor(rec.labels, dtype=torch.int64),
            "image_id": rec.image_id,
            "index": index,
            "variant": int(variant),
            "scale": float(scale),
            "orig_size": (height, width),
            "labeled": rec.labeled,
        }
        return tensor, target

    # ------------------------------------------------------------------ internals
    def _normalise(self, index: int) -> int:
        n = len(self._records_list)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        return index

    def _load(self, rec: _Record) -> tuple[Image.Image, tuple[int, int]]:
        """The decoded RGB pixels (possibly at a reduced JPEG scale) and the original ``(w, h)``."""
        try:
            with warnings.catch_warnings():  # a warned-about size is refused too: no 100 Mpx decode
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(rec.path) as im:
                    size = im.size
                    if rec.width is not None and size != (rec.width, rec.height):
                        raise DataError(
                            self.ann_file,
                            f"image id {rec.image_id}",
                            f"{rec.path.name} is {size[0]}x{size[1]} px but the JSON says {rec.width}x{rec.height}",
                        )
                    image = to_rgb(im, self.transform.image_size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(rec.path, None, _bomb(exc)) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(
                rec.path, f"image id {rec.image_id}", f"cannot read image ({type(exc).__name__}: {exc})"
            ) from None
        return image, size

    def _records(
        self,
        images: list[dict[str, Any]],
        sizes: dict[int, tuple[int, int]],
        kept: list[dict[str, Any]],
        annotated: set[int],
        include_unlabeled: bool,
    ) -> list[_Record]:
        per_image: dict[int, list[dict[str, Any]]] = {}
        for ann in kept:
            if not ann.get("iscrowd", 0) and ann["category_id"] in self.cat_id_to_label:
                per_image.setdefault(ann["image_id"], []).append(ann)
        records = []
        for img in sorted(images, key=lambda im: im["id"]):
            iid = img["id"]
            labeled = iid in annotated
            if not labeled and not include_unlabeled:
                continue
            anns = per_image.get(iid, [])
            boxes = np.array(
                [
                    [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                    for a in anns
                ],
                dtype=np.float32,
            ).reshape(-1, 4)
            labels = np.array([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
            w, h = sizes[iid]
            records.append(_Record(iid, self.images_dir / img["file_name"], w, h, boxes, labels, labeled))
        return records

    def _build_coco(
        self,
        data: dict[str, Any],
        images: list[dict[str, Any]],
        sizes: dict[int, tuple[int, int]],
        kept: list[dict[str, Any]],
        categories: list[dict[str, Any]],
    ) -> COCO:
        cats = {c["id"]: c for c in categories}
        dataset = {
            "info": data.get("info", {}),
            "images": [
                {**img, "width": sizes[img["id"]][0], "height": sizes[img["id"]][1]} for img in images
            ],
            "annotations": [a for a in kept if a["category_id"] in self.cat_id_to_label],
            "categories": [cats[self.label_to_cat_id[k + 1]] for k in range(len(self.class_names))],
        }
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


# ---------------------------------------------------------------------- reading and validation
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, None, "annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            path, f"line {exc.lineno}, column {exc.colno}", f"malformed JSON ({exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise DataError(path, None, "not a UTF-8 text file") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entry(section: str, k: int, item: Any) -> str:
    if isinstance(item, Mapping) and _is_int(item.get("id")):
        return f"{section}[{k}] (id {item['id']})"
    return f"{section}[{k}]"


def _check_schema(
    data: Any, path: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Check the COCO structure; return ``(images, annotations, categories)``."""
    if not isinstance(data, Mapping):
        raise DataError(path, None, f"expected a JSON object at the top level, got {type(data).__name__}")
    sections = {}
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(
                path, key, "missing required key (a COCO file needs images, annotations, categories)"
            )
        if not isinstance(data[key], list):
            raise DataError(path, key, f"expected a list, got {type(data[key]).__name__}")
        for k, item in enumerate(data[key]):
            if not isinstance(item, Mapping):
                raise DataError(path, f"{key}[{k}]", f"expected an object, got {type(item).__name__}")
            if not _is_int(item.get("id")):
                raise DataError(path, f"{key}[{k}].id", f"expected an integer id, got {item.get('id')!r}")
        sections[key] = data[key]
    images, annotations, categories = sections["images"], sections["annotations"], sections["categories"]
    for k, img in enumerate(images):
        where = _entry("images", k, img)
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise DataError(path, f"{where}.file_name", f"expected a file name, got {img.get('file_name')!r}")
        for dim in ("width", "height"):
            if dim in img and not (_is_int(img[dim]) and img[dim] > 0):
                raise DataError(path, f"{where}.{dim}", f"expected a positive integer, got {img[dim]!r}")
    for k, cat in enumerate(categories):
        if not isinstance(cat.get("name"), str) or not cat["name"]:
            raise DataError(
                path, f"{_entry('categories', k, cat)}.name", f"expected a name, got {cat.get('name')!r}"
            )
    for k, ann in enumerate(annotations):
        where = _entry("annotations", k, ann)
        for key in ("image_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise DataError(path, f"{where}.{key}", f"expected an integer, got {ann.get(key)!r}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(path, f"{where}.bbox", f"expected [x, y, width, height] numbers, got {bbox!r}")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DataError(path, f"{where}.iscrowd", f"expected 0 or 1, got {ann.get('iscrowd')!r}")
    for key, items in sections.items():
        seen: set[int] = set()
        for k, item in enumerate(items):
            if item["id"] in seen:
                raise DataError(path, f"{key}[{k}]", f"duplicate id {item['id']}")
            seen.add(item["id"])
    names: set[str] = set()
    for k, cat in enumerate(categories):
        if cat["name"] in names:
            raise DataError(path, _entry("categories", k, cat), f"duplicate category name {cat['name']!r}")
        names.add(cat["name"])
    return images, annotations, categories


def _resolve_classes(
    categories: list[dict[str, Any]], class_names: Sequence[str] | None, path: Path
) -> tuple[tuple[str, ...], dict[int, int]]:
    """Return ``(class_names, cat_id_to_label)``; labels are 1-based positions in ``class_names``."""
    by_name = {c["name"]: c["id"] for c in categories}
    if class_names is None:
        class_names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    names = tuple(class_names)
    if not names:
        raise DataError(path, "categories", "no classes to learn (the file has no categories)")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {list(names)}")
    for name in names:
        if name not in by_name:
            raise DataError(
                path,
                "categories",
                f"class {name!r} not found (available: {', '.join(sorted(by_name)) or 'none'})",
            )
    return names, {by_name[name]: k + 1 for k, name in enumerate(names)}


def to_rgb(im: Image.Image, target_side: int | None = None) -> Image.Image:
    """Decode ``im`` as 8-bit RGB whatever its mode; with ``target_side`` a JPEG at least twice as
    large as needed is decoded at a reduced DCT scale (never below ``target_side``)."""
    if target_side is not None and im.format == "JPEG" and max(im.size) >= 2 * target_side:
        scale = target_side / max(im.size)
        im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = float(arr.max()) if arr.size else 0.0
        arr = arr * (255.0 / peak) if peak > 255.0 else arr
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _image_sizes(images: list[dict[str, Any]], images_dir: Path, path: Path) -> dict[int, tuple[int, int]]:
    """Check every image file exists; return ``{image_id: (width, height)}`` (header read if absent)."""
    missing = [(k, img) for k, img in enumerate(images) if not os.path.isfile(images_dir / img["file_name"])]
    if missing:
        k, img = missing[0]
        more = f" ({len(missing)} of {len(images)} image files missing)" if len(missing) > 1 else ""
        raise DataError(
            path, _entry("images", k, img), f"image file not found: {images_dir / img['file_name']}{more}"
        )
    sizes = {}
    for k, img in enumerate(images):
        if "width" in img and "height" in img:
            sizes[img["id"]] = (img["width"], img["height"])
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(images_dir / img["file_name"]) as im:
                    sizes[img["id"]] = im.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(path, _entry("images", k, img), _bomb(exc)) from None
        except OSError as exc:
            raise DataError(path, _entry("images", k, img), f"cannot read image size ({exc})") from None
    return sizes


def _bomb(exc: Exception) -> str:
    """One line for an image over Pillow's pixel limit (a possible decompression bomb)."""
    return (
        f"image too large to decode safely ({str(exc).split(',')[0]}); "
        "possible decompression bomb, resize it or drop it from the dataset"
    )


@dataclass
class _Cleaned:
    kept: list[dict[str, Any]]  # annotations with clipped bbox, area and iscrowd filled in
    annotated: set[int]  # image ids with at least one annotation in the JSON
    dropped_ids: tuple[int, ...]
    clipped: int


def _clean_annotations(
    annotations: list[dict[str, Any]],
    images: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    sizes: dict[int, tuple[int, int]],
    path: Path,
) -> _Cleaned:
    """Check references, clip boxes to the image and drop those thinner than 1 px after clipping."""
    image_ids = {img["id"] for img in images}
    cat_ids = {c["id"] for c in categories}
    kept, dropped, clipped, annotated = [], [], 0, set()
    for k, ann in enumerate(annotations):
        where = _entry("annotations", k, ann)
        if ann["image_id"] not in image_ids:
            raise DataError(path, where, f"image_id {ann['image_id']} not in images")
        if ann["category_id"] not in cat_ids:
            raise DataError(path, where, f"category_id {ann['category_id']} not in categories")
        annotated.add(ann["image_id"])
        w_img, h_img = sizes[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1 = min(max(x, 0.0), w_img), min(max(y, 0.0), h_img)
        x2, y2 = min(max(x + w, 0.0), w_img), min(max(y + h, 0.0), h_img)
        if x2 - x1 <= 1.0 or y2 - y1 <= 1.0:
            dropped.append(ann["id"])
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            clipped += 1
        bbox = [x1, y1, x2 - x1, y2 - y1]
        given: Any = ann.get("area")
        area = float(given) if _is_number(given) and given > 0 else bbox[2] * bbox[3]
        kept.append({**ann, "bbox": bbox, "area": area, "iscrowd": int(ann.get("iscrowd", 0))})
    return _Cleaned(kept, annotated, tuple(dropped), clipped)


def _drop_summary(path: Path, dropped: tuple[int, ...], clipped: int) -> str:
    parts = []
    if dropped:
        shown = ", ".join(str(i) for i in dropped[:_MAX_IDS_SHOWN])
        more = ", ..." if len(dropped) > _MAX_IDS_SHOWN else ""
        parts.append(f"dropped {len(dropped)} degenerate or out-of-image boxes (ids {shown}{more})")
    if clipped:
        parts.append(f"clipped {clipped} boxes to the image")
    return f"{path.name}: {'; '.join(parts)}"


def _folder_records(folder: Path, ann_file: Path) -> list[_Record]:
    if not folder.is_dir():
        raise DataError(folder, None, f"unlabeled image folder not found (given with {ann_file.name})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    empty_boxes = np.zeros((0, 4), dtype=np.float32)
    empty_labels = np.zeros((0,), dtype=np.int64)
    return [_Record(-(k + 1), p, None, None, empty_boxes, empty_labels, False) for k, p in enumerate(files)]


# ---------------------------------------------------------------------- subsets
def base_dataset(dataset: Dataset[Any]) -> Dataset[Any]:
    """The dataset under any chain of ``torch.utils.data.Subset`` wrappers."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _base_positions(dataset: Dataset[Any]) -> list[int]:
    """For each position of ``dataset``, its index in :func:`base_dataset` ``(dataset)``."""
    if isinstance(dataset, Subset):
        inner = _base_positions(dataset.dataset)
        return [inner[int(i)] for i in dataset.indices]
    return list(range(len(dataset)))  # type: ignore[arg-type]


def _count(size: int | float, n: int, what: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise TypeError(f"{what} must be an int or a float, got {size!r}")
    if isinstance(size, float):
        if not 0.0 < size <= 1.0:
            raise ValueError(f"{what} as a fraction must be in (0, 1], got {size}")
        return max(1, round(size * n)) if n else 0
    if size <= 0:
        raise ValueError(f"{what} must be positive, got {size}")
    return min(size, n)


def _choose(candidates: list[int], k: int, seed: int) -> list[int]:
    if k >= len(candidates):
        return list(candidates)
    order = np.random.default_rng(seed).permutation(len(candidates))[:k]
    return sorted(candidates[int(j)] for j in order)


def subset(dataset: Dataset[Any], size: int | float, seed: int) -> Subset[Any]:
    """A seeded random subset with sorted indices, identical across runs for the same arguments.

    Args:
        dataset: Any sized dataset (a ``Subset`` too).
        size: Number of items, or a float in ``(0, 1]`` for a fraction (rounded, at least 1);
            ``size >= len(dataset)`` keeps everything.
        seed: Selection seed (``numpy.random.default_rng(seed).permutation``).
    """
    n = len(dataset)  # type: ignore[arg-type]
    return Subset(dataset, _choose(list(range(n)), _count(size, n, "size"), seed))


def labeled_fraction(dataset: Dataset[Any], fraction: int | float, seed: int) -> Subset[Any]:
    """A seeded subset of the *labeled* items of ``dataset`` (e.g. 20% of the ground truth).

    Args:
        dataset: A :class:`CocoDetection` or a ``Subset`` chain over one.
        fraction: Fraction in ``(0, 1]`` of the labeled items (at least 1), or a count.
        seed: Selection seed.
    """
    base = base_dataset(dataset)
    if not isinstance(base, CocoDetection):
        raise TypeError(
            f"labeled_fraction needs a CocoDetection (or a Subset of one), got {type(base).__name__}"
        )
    labeled = [pos for pos, i in enumerate(_base_positions(dataset)) if base.is_labeled(i)]
    if not labeled:
        raise DataError(base.ann_file, None, "no labeled images to take a labeled fraction from")
    return Subset(dataset, _choose(labeled, _count(fraction, len(labeled), "fraction"), seed))


class FixedVariant(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """Items of ``dataset`` (a :class:`CocoDetection` or a ``Subset`` chain over one) in one fixed variant.

    Use it for evaluation (variant 0 whatever the transform's ``hflip``) and to fill a cache with
    every variant of every item. Position ``i`` is ``dataset``'s position ``i``.
    """

    def __init__(self, dataset: Dataset[Any], variant: int = 0) -> None:
        base = base_dataset(dataset)
        if not isinstance(base, CocoDetection):
            raise TypeError(
                f"FixedVariant needs a CocoDetection (or a Subset of one), got {type(base).__name__}"
            )
        if not 0 <= variant < base.num_variants:
            raise ValueError(f"variant {variant} out of range for {base.num_variants} variant(s)")
        self.base = base
        self.variant = int(variant)
        self.positions = _base_positions(dataset)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.base.get(self.positions[index], self.variant)


__all__ = ["IMAGE_EXTENSIONS", "CocoDetection", "FixedVariant", "base_dataset", "labeled_fraction", "subset"]
