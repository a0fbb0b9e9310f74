"""Teacher-output cache: run each frozen teacher once per (weights, dataset, transform, image, variant).

Teachers are frozen and proxy runs of many trials see the same images, so a teacher's outputs on
an image are a pure function of ``(teacher weights + spec, dataset content + transform, index,
variant)`` as long as the input pipeline is deterministic (augmentation drawn from a finite set of
variants, see :mod:`curriculum_search.data.transforms`). :class:`TeacherRunner` looks every image of
a batch up in a :class:`TeacherCache`, runs the teacher only on the misses (one sub-batch) and
assembles the batched :class:`TeacherOutput` the trainer consumes.

Storage:

* A **namespace** (:func:`cache_namespace`) identifies one (teacher, dataset, what is stored,
  feature dtype) combination; entries are keyed by ``(index, variant)`` inside it.
* A **record** is a flat ``dict[str, Tensor]`` for one image: ``f{level}`` FPN maps ``(C, H, W)`` in
  the configured feature dtype (fp16 by default), ``d.<name>`` dense head outputs ``(A, ...)`` in
  fp16, ``det.boxes`` / ``det.scores`` / ``det.labels`` post-processed detections.
* **Memory**: an LRU dict bounded by ``max_memory_mb``.
* **Disk** (optional): ``root/<namespace>/<index>-<variant>.pt``, a ``torch.save``'d dict holding
  the format version, the record's tensors packed into one byte blob, their layout and the blob's
  sha256 (:func:`encode_entry`), read back with ``torch.load(weights_only=True)``; written
  atomically so several processes can share the folder, plus ``root/<namespace>/manifest.json``. A manifest from another
  format version or with other content marks the namespace stale: the folder is wiped and rebuilt.
  An entry that cannot be loaded, fails its checksum or lacks required keys is deleted, counted in
  :attr:`CacheStats.corrupt_rebuilt` and recomputed. Past ``max_disk_mb`` (whole ``root``) new
  entries stay in memory only; nothing is ever deleted to make room.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from curriculum_search.models.detector import Detection, Detector
from curriculum_search.utils.config import check, to_dict
from curriculum_search.utils.io import atomic_write_bytes, atomic_write_text, stable_hash

#: Bumped whenever the layout of a stored entry changes; older namespaces are wiped and rebuilt.
CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DETECTION_KEYS = ("det.boxes", "det.scores", "det.labels")
#: Dense head outputs every one-stage detector (RetinaNet, FCOS) produces.
DENSE_REQUIRED = ("d.cls_logits", "d.bbox_regression")
DENSE_DTYPE = torch.float16
_MB = 1024 * 1024
_KEY_ATTR = "_teacher_cache_key"

FeatureDtype = Literal["float16", "float32"]
EntryKey = tuple[int, int]


# --------------------------------------------------------------------------------------- types
@dataclass
class TeacherOutput:
    """Batched teacher outputs, in the order of the batch.

    Attributes:
        features: FPN maps per level, finest first, ``(B, C, H, W)``; fp16 when the cache policy is
            ``float16`` (consumers cast to their own dtype), full precision without a cache.
        dense: dense head outputs ``(B, A, ...)`` (``cls_logits``, ``bbox_regression``, FCOS
            ``bbox_ctrness``); fp16 when cached. ``None`` when not requested or for two-stage teachers.
        detections: per image ``boxes (M, 4)`` / ``scores (M,)`` / ``labels (M,)``; ``None`` when
            not requested.
    """

    features: list[Tensor]
    dense: dict[str, Tensor] | None = None
    detections: list[Detection] | None = None


@dataclass(frozen=True)
class CacheConfig:
    """Teacher-output cache settings.

    Attributes:
        enabled: False disables the cache (every batch runs the teacher).
        root: folder of the disk cache (shared by processes, e.g. ``studies/<name>/teacher_cache``);
            ``None`` keeps entries in memory only.
        max_memory_mb: bound of the in-memory LRU per :class:`TeacherCache` (default 1024 MB;
            ``0`` = no memory layer, every hit reads the disk).
        max_disk_mb: bound of the whole ``root`` folder (default 20480 MB). Past it new entries are
            not written (one warning); entries are never deleted to make room.
        feature_dtype: dtype of cached FPN maps (default ``float16``; dense outputs are always fp16).
    """

    enabled: bool = True
    root: Path | None = None
    max_memory_mb: float = 1024
    max_disk_mb: float = 20480
    feature_dtype: FeatureDtype = "float16"

    def __post_init__(self) -> None:
        check(self.max_memory_mb >= 0, "max_memory_mb", f"must be >= 0, got {self.max_memory_mb}")
        check(self.max_disk_mb >= 0, "max_disk_mb", f"must be >= 0, got {self.max_disk_mb}")
        check(
            self.feature_dtype in ("float16", "float32"),
            "feature_dtype",
            f"must be 'float16' or 'float32', got {self.feature_dtype!r}",
        )
        if self.root is not None and not isinstance(self.root, Path):
            object.__setattr__(self, "root", Path(self.root))

    @property
    def torch_feature_dtype(self) -> torch.dtype:
        """``feature_dtype`` as a :class:`torch.dtype`."""
        return torch.float16 if self.feature_dtype == "float16" else torch.float32


@dataclass
class CacheStats:
    """Counters of one :class:`TeacherCache`.

    Attributes:
        hits / misses: lookups answered from memory or disk / not found (or corrupt).
        corrupt_rebuilt: disk entries found unreadable, failing their checksum, of another format
            or lacking required keys; each was deleted (and is recomputed by the runner).
        bytes_in_memory: bytes held by the in-memory LRU.
        bytes_on_disk: estimated bytes under ``root`` (a scan at start-up plus this cache's own
            writes and deletions); the quantity ``max_disk_mb`` bounds.
        evictions: records dropped from memory by the LRU bound.
        disk_writes: entries written by this cache.
    """

    hits: int = 0
    misses: int = 0
    corrupt_rebuilt: int = 0
    bytes_in_memory: int = 0
    bytes_on_disk: int = 0
    evictions: int = 0
    disk_writes: int = 0


# --------------------------------------------------------------------------------------- keys
def _tensor_bytes(t: Tensor) -> memoryview:
    """Raw bytes of ``t`` (any dtype, any device) as a buffer, for hashing."""
    flat = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return flat.numpy().data


def _state_version(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Storage address and in-place version counter of every state tensor (change with the weights)."""
    return tuple((t.data_ptr(), t._version) for t in model.state_dict().values())


def teacher_key(model: nn.Module) -> str:
    """Stable 16-hex-digit hash of a teacher's weights and spec.

    Hashes the name, dtype, shape and bytes of every ``state_dict`` tensor (buffers included) plus
    the model's :class:`~curriculum_search.models.DetectorSpec` without its ``weights`` field (where
    the weights came from does not matter, only their values). The result is memoised on the module
    and recomputed when any state tensor is replaced or modified in place (version counters).

    Args:
        model: the teacher (a :class:`~curriculum_search.models.Detector` or any module).

    Returns:
        A hex string, identical across processes for identical weights and spec.
    """
    version = _state_version(model)
    memo = model.__dict__.get(_KEY_ATTR)
    if memo is not None and memo[0] == version:
        return str(memo[1])
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(_tensor_bytes(tensor))
    spec = getattr(model, "spec", None)
    spec_dict = to_dict(spec) if spec is not None else {}
    if isinstance(spec_dict, dict):
        spec_dict.pop("weights", None)
    key = stable_hash({"weights": h.hexdigest(), "spec": spec_dict, "class": type(model).__name__})
    model.__dict__[_KEY_ATTR] = (version, key)
    return key


def _stored_parts(need_dense: bool, need_detections: bool) -> list[str]:
    return ["features"] + (["dense"] if need_dense else []) + (["detections"] if need_detections else [])


def cache_namespace(
    teacher_key: str,
    dataset_fingerprint: str,
    need_dense: bool,
    need_detections: bool,
    feature_dtype: FeatureDtype = "float16",
) -> str:
    """Folder name of one (teacher, dataset, stored outputs, feature dtype) combination.

    A 12-hex-digit hash of all parts followed by readable parts, e.g.
    ``3fa2c1d9e0b4-fp16-features-dense-detections``. Use the fingerprint of the *whole* dataset
    (it covers the transform): entries are keyed by dataset index, so every subset shares them.
    """
    parts = _stored_parts(need_dense, need_detections)
    digest = stable_hash(
        {"teacher": teacher_key, "dataset": dataset_fingerprint, "stores": parts, "dtype": feature_dtype}, 12
    )
    short = "fp16" if feature_dtype == "float16" else "fp32"
    return "-".join([digest, short, *parts])


_DTYPES = {
    str(dt).removeprefix("torch."): dt
    for dt in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.uint8,
        torch.bool,
    )
}
_ALIGN = 8


def encode_entry(record: Mapping[str, Tensor]) -> dict[str, Any]:
    """The dict stored for one record: every tensor packed into one byte blob, plus its layout.

    One tensor per file keeps ``torch.load`` cheap (its cost grows with the number of tensors) and
    lets one sha256 over the blob guard the whole record. ``layout`` lists
    ``[name, dtype, shape, byte offset]``; offsets are 8-byte aligned so each tensor is a view.
    """
    parts: list[Tensor] = []
    layout: list[list[Any]] = []
    offset = 0
    for name in sorted(record):
        t = record[name].detach().to("cpu")
        pad = -offset % _ALIGN
        if pad:
            parts.append(torch.zeros(pad, dtype=torch.uint8))
            offset += pad
        flat = t.contiguous().reshape(-1).view(torch.uint8)
        layout.append([name, str(t.dtype).removeprefix("torch."), list(t.shape), offset])
        parts.append(flat)
        offset += flat.numel()
    blob = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8)
    return {
        "format": CACHE_FORMAT_VERSION,
        "sha256": hashlib.sha256(blob.numpy().data).hexdigest(),
        "layout": layout,
        "blob": blob,
    }


def decode_entry(entry: Any, required: Collection[str] = ()) -> dict[str, Tensor] | None:
    """Inverse of :func:`encode_entry`; ``None`` when the entry is of another format, fails its
    checksum, has an inconsistent layout or lacks one of the ``required`` keys."""
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT_VERSION:
        return None
    blob, layout = entry.get("blob"), entry.get("layout")
    if (
        not isinstance(blob, Tensor)
        or blob.dtype != torch.uint8
        or blob.dim() != 1
        or not isinstance(layout, list)
    ):
        return None
    if entry.get("sha256") != hashlib.sha256(blob.contiguous().numpy().data).hexdigest():
        return None
    record: dict[str, Tensor] = {}
    try:
        for name, dtype_name, shape, offset in layout:
            dtype = _DTYPES[dtype_name]
            numel = math.prod(shape)
            size = numel * torch.empty((), dtype=dtype).element_size()
            if offset % _ALIGN or offset + size > blob.numel():
                return None
            record[str(name)] = blob[offset : offset + size].view(dtype).reshape(shape)
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    if not record or any(k not in record for k in required):
        return None
    return record


def _record_bytes(record: Mapping[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in record.values())


def _folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):  # removed by another process meanwhile
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total


# --------------------------------------------------------------------------------------- cache
class TeacherCache:
    """Memory LRU + optional disk store of per-image teacher records for one namespace.

    Records returned by :meth:`get` are shared with the cache: treat them as read-only
    (:class:`TeacherRunner` copies them when it assembles a batch).

    Args:
        config: the cache settings.
        namespace: e.g. from :func:`cache_namespace`; names the disk folder.
        meta: JSON-serialisable description written to the manifest (teacher key, dataset
            fingerprint, what is stored). A manifest on disk with another format version, meta or
            feature dtype makes the namespace stale: its folder is wiped (one warning).
    """

    def __init__(self, config: CacheConfig, namespace: str, *, meta: Mapping[str, Any] | None = None) -> None:
        if not namespace or "/" in namespace or "\\" in namespace or namespace.startswith("."):
            raise ValueError(f"cache namespace must be a plain folder name, got {namespace!r}")
        self.config = config
        self.namespace = namespace
        self.stats = CacheStats()
        self._memory: OrderedDict[EntryKey, dict[str, Tensor]] = OrderedDict()
        self._memory_limit = int(config.max_memory_mb * _MB)
        self._disk_limit = int(config.max_disk_mb * _MB)
        self._disk_full_warned = False
        self._disk_error_warned = False
        self.manifest: dict[str, Any] = {
            "format": CACHE_FORMAT_VERSION,
            "namespace": namespace,
            "feature_dtype": config.feature_dtype,
            "dense_dtype": "float16",
            **dict(meta or {}),
        }
        self.folder: Path | None = None
        if config.enabled and config.root is not None:
            self.folder = Path(config.root) / namespace
            self._open_folder()
            self.stats.bytes_on_disk = _folder_bytes(Path(config.root))

    @classmethod
    def for_teacher(
        cls,
        config: CacheConfig,
        teacher_key: str,
        dataset_fingerprint: str,
        *,
        need_dense: bool,
        need_detections: bool,
    ) -> TeacherCache:
        """The cache of one teacher on one dataset, with its namespace and manifest filled in."""
        ns = cache_namespace(
            teacher_key, dataset_fingerprint, need_dense, need_detections, config.feature_dtype
        )
        meta = {
            "teacher_key": teacher_key,
            "dataset_fingerprint": dataset_fingerprint,
            "stores": _stored_parts(need_dense, need_detections),
        }
        return cls(config, ns, meta=meta)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # -- disk folder ------------------------------------------------------------------------
    def _open_folder(self) -> None:
        """Create the namespace folder, or wipe it when its manifest is stale or unreadable."""
        assert self.folder is not None
        path = self.folder / MANIFEST_NAME
        if path.is_file():
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError):
                found = None
            if found == self.manifest:
                return
            reason = (
                f"format {found.get('format')} != {CACHE_FORMAT_VERSION}"
                if isinstance(found, dict) and found.get("format") != CACHE_FORMAT_VERSION
                else "manifest content differs"
            )
            warnings.warn(
                f"teacher cache {self.folder} is stale ({reason}): wiping it, entries are recomputed",
                stacklevel=3,
            )
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.manifest, sort_keys=True, indent=1) + "\n")

    def path(self, index: int, variant: int) -> Path | None:
        """File of entry ``(index, variant)``; ``None`` for a memory-only cache."""
        return None if self.folder is None else self.folder / f"{int(index)}-{int(variant)}.pt"

    def _read(self, path: Path, required: Collection[str]) -> dict[str, Tensor] | None:
        """Load and verify one entry; a bad one is deleted and counted. ``None`` when absent/bad."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            data = b""
        record = _load_entry(data, required)
        if record is None:
            path.unlink(missing_ok=True)
            self.stats.corrupt_rebuilt += 1
            self.stats.bytes_on_disk = max(0, self.stats.bytes_on_disk - len(data))
        return record

    def _write(self, path: Path, record: Mapping[str, Tensor]) -> None:
        buf = io.BytesIO()
        torch.save(encode_entry(record), buf)
        blob = buf.getvalue()
        if self.stats.bytes_on_disk + len(blob) > self._disk_limit:
            if not self._disk_full_warned:
                self._disk_full_warned = True
                warnings.warn(
                    f"teacher cache {self.config.root} reached max_disk_mb={self.config.max_disk_mb:g}: "
                    "new entries are kept in memory only (raise cache.max_disk_mb or free disk space)",
                    stacklevel=3,
                )
            return
        try:
            atomic_write_bytes(path, blob)
        except OSError as exc:
            if not self._disk_error_warned:
                self._disk_error_warned = True
                warnings.warn(
                    f"teacher cache cannot write {path} ({exc}); keeping entries in memory", stacklevel=3
                )
            return
        self.stats.bytes_on_disk += len(blob)
        self.stats.disk_writes += 1

    # -- memory LRU -------------------------------------------------------------------------
    def _remember(self, key: EntryKey, record: dict[str, Tensor]) -> None:
        size = _record_bytes(record)
        old = self._memory.pop(key, None)
        if old is not None:
            self.stats.bytes_in_memory -= _record_bytes(old)
        if size > self._memory_limit:
            return
        self._memory[key] = record
        self.stats.bytes_in_memory += size
        while self.stats.bytes_in_memory > self._memory_limit:
            _, evicted = self._memory.popitem(last=False)
            self.stats.bytes_in_memory -= _record_bytes(evicted)
            self.stats.evictions += 1

    def memory_keys(self) -> list[EntryKey]:
        """``(index, variant)`` keys held in memory, least recently used first."""
        return list(self._memory)

    def clear_memory(self) -> None:
        """Drop the in-memory layer (the disk entries stay)."""
        self._memory.clear()
        self.stats.bytes_in_memory = 0

    # -- public API -------------------------------------------------------------------------
    def get(self, index: int, variant: int, *, required: Collection[str] = ()) -> dict[str, Tensor] | None:
        """The record of image ``index`` in augmentation ``variant``, or ``None`` on a miss.

        Args:
            index: dataset index of the image.
            variant: augmentation variant (0 = none).
            required: keys the record must have; a disk entry lacking one counts as corrupt
                (deleted, counted, ``None``); a memory record lacking one is dropped.
        """
        if not self.config.enabled:
            self.stats.misses += 1
            return None
        key = (int(index), int(variant))
        record = self._memory.get(key)
        if record is not None and all(k in record for k in required):
            self._memory.move_to_end(key)
            self.stats.hits += 1
            return record
        if record is not None:  # put by a caller that stored less than this one needs
            self.stats.bytes_in_memory -= _record_bytes(self._memory.pop(key))
        path = self.path(*key)
        record = self._read(path, required) if path is not None else None
        if record is None:
            self.stats.misses += 1
            return None
        self._remember(key, record)
        self.stats.hits += 1
        return record

    def put(self, index: int, variant: int, record: Mapping[str, Tensor]) -> None:
        """Store the record of image ``index`` in ``variant`` (CPU tensors; the cache keeps them)."""
        if not self.config.enabled:
            return
        key = (int(index), int(variant))
        record = dict(record)
        self._remember(key, record)
        path = self.path(*key)
        if path is not None:
            self._write(path, record)

    def __repr__(self) -> str:
        where = str(self.folder) if self.folder is not None else "memory"
        return f"TeacherCache({self.namespace!r}, {where}, {self.stats})"


def _load_entry(data: bytes, required: Collection[str]) -> dict[str, Tensor] | None:
    """Parse a stored file; ``None`` when unreadable (truncated, garbage) or rejected by
    :func:`decode_entry`."""
    if not data:
        return None
    try:
        entry = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, garbage, unpickling refused: all mean "rebuild"
        return None
    return decode_entry(entry, required)


# --------------------------------------------------------------------------------------- runner
def _split_records(
    features: Sequence[Tensor],
    dense: Mapping[str, Tensor] | None,
    detections: Sequence[Detection] | None,
    feature_dtype: torch.dtype | None,
    dense_dtype: torch.dtype | None,
) -> list[dict[str, Tensor]]:
    """Per-image records from batched outputs; ``None`` dtypes keep the model's dtype."""
    batch = features[0].shape[0]
    records: list[dict[str, Tensor]] = []
    for i in range(batch):
        rec: dict[str, Tensor] = {}
        for level, f in enumerate(features):
            rec[f"f{level}"] = f[i].to(dtype=feature_dtype) if feature_dtype is not None else f[i]
        for name, value in (dense or {}).items():
            rec[f"d.{name}"] = value[i].to(dtype=dense_dtype) if dense_dtype is not None else value[i]
        if detections is not None:
            det = detections[i]
            rec["det.boxes"], rec["det.scores"], rec["det.labels"] = (
                det["boxes"],
                det["scores"],
                det["labels"],
            )
        records.append(rec)
    return records


def _stack(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    """Stack per-image tensors into a new (autograd-usable, non-inference) batch on ``device``."""
    if all(t.device == tensors[0].device for t in tensors):
        return torch.stack(list(tensors)).to(device)
    return torch.stack([t.to(device) for t in tensors])


def _entry_key(target: Mapping[str, Any], position: int) -> EntryKey:
    try:
        return int(target["index"]), int(target.get("variant", 0))
    except KeyError:
        raise KeyError(
            f"target {position} has no 'index': the teacher cache needs the dataset index of every image"
        ) from None


class TeacherRunner:
    """Runs a frozen teacher on a batch, through the cache when the inputs allow it.

    Args:
        model: the teacher; put in eval mode, run under ``torch.inference_mode``.
        cache: the teacher's cache (``None``: no caching).
        need_dense: return dense head outputs (ignored, i.e. ``None``, for two-stage teachers).
        need_detections: return post-processed detections (pseudo labels).
        cacheable: whether images are a pure function of ``(index, variant)``; when False (random
            augmentation) the cache is bypassed with one warning and every batch runs the teacher.
        device: where the teacher runs and outputs are returned (default: the model's device).

    Attributes:
        forward_calls: teacher forward passes run so far.
        images_forwarded: images those passes processed.
    """

    def __init__(
        self,
        model: Detector,
        cache: TeacherCache | None,
        *,
        need_dense: bool,
        need_detections: bool,
        cacheable: bool,
        device: torch.device | str | None = None,
    ) -> None:
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model: Detector = model.to(self.device).eval()
        self.cache = cache
        self.need_dense = bool(need_dense) and getattr(model, "kind", "dense") == "dense"
        self.need_detections = bool(need_detections)
        self.cacheable = bool(cacheable)
        self.forward_calls = 0
        self.images_forwarded = 0
        self._required: frozenset[str] = frozenset(
            ["f0"]
            + (list(DENSE_REQUIRED) if self.need_dense else [])
            + (list(DETECTION_KEYS) if self.need_detections else [])
        )
        self._use_cache = cache is not None and cache.enabled and self.cacheable
        if cache is not None and cache.enabled and not self.cacheable:
            label = getattr(getattr(model, "spec", None), "label", type(model).__name__)
            warnings.warn(
                f"teacher cache bypassed for {label}: the input augmentation is random (e.g. color_jitter > 0), "
                "so the teacher runs on every batch; draw augmentation from a finite variant set "
                "(e.g. hflip only) to make its outputs cacheable",
                stacklevel=2,
            )

    @property
    def feature_dtype(self) -> torch.dtype | None:
        """dtype of returned features: the cache's policy, or ``None`` (model dtype) without cache."""
        return self.cache.config.torch_feature_dtype if self._use_cache and self.cache is not None else None

    def __call__(self, images: Tensor, targets: Sequence[Mapping[str, Any]]) -> TeacherOutput:
        """Teacher outputs for ``images`` ``(B, 3, S, S)``; ``targets[i]`` gives ``index``/``variant``."""
        if not self._use_cache or self.cache is None:
            return self._assemble(self._forward(images))
        if len(targets) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(targets)} targets")
        keys = [_entry_key(t, i) for i, t in enumerate(targets)]
        unique = list(dict.fromkeys(keys))
        found: dict[EntryKey, dict[str, Tensor]] = {}
        for key in unique:
            record = self.cache.get(*key, required=self._required)
            if record is not None:
                found[key] = record
        missing = [k for k in unique if k not in found]
        if missing:
            rows = [keys.index(k) for k in missing]
            fresh = self._forward(images[rows] if len(rows) < images.shape[0] else images)
            for key, record in zip(missing, fresh):
                self.cache.put(*key, {k: v.to("cpu", copy=True) for k, v in record.items()})
                found[key] = record
        return self._assemble([found[k] for k in keys])

    # -- internals ---------------------------------------------------------------------------
    def _forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        """One teacher pass; per-image records on ``self.device`` in the storage dtypes."""
        if self.model.training:
            self.model.eval()
        x = images.to(self.device)
        dense: dict[str, Tensor] | None = None
        detections: list[Detection] | None = None
        with torch.inference_mode():
            if not self.need_dense and not self.need_detections:
                features = list(self.model.features(x))
            else:
                out = self.model(x, detections=self.need_detections)
                features = list(out.features)
                dense = out.dense if self.need_dense else None
                detections = out.detections if self.need_detections else None
        self.forward_calls += 1
        self.images_forwarded += int(x.shape[0])
        records = _split_records(
            features, dense, detections, self.feature_dtype, DENSE_DTYPE if self._use_cache else None
        )
        if self._use_cache and len(self._required) < len(records[0]):
            self._required = frozenset(records[0])
        return records

    def _assemble(self, records: Sequence[dict[str, Tensor]]) -> TeacherOutput:
        first = records[0]
        levels = sorted(int(k[1:]) for k in first if k.startswith("f"))
        features = [_stack([r[f"f{lvl}"] for r in records], self.device) for lvl in levels]
        dense: dict[str, Tensor] | None = None
        if self.need_dense:
            names = [k for k in first if k.startswith("d.")]
            dense = {k[2:]: _stack([r[k] for r in records], self.device) for k in names}
        detections: list[Detection] | None = None
        if self.need_detections:
            detections = [{k[4:]: r[k].to(self.device, copy=True) for k in DETECTION_KEYS} for r in records]
        return TeacherOutput(features=features, dense=dense, detections=detections)


__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheConfig",
    "CacheStats",
    "TeacherCache",
    "TeacherOutput",
    "TeacherRunner",
    "cache_namespace",
    "decode_entry",
    "encode_entry",
    "teacher_key",
]
