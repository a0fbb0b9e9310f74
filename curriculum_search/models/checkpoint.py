"""Model checkpoints: student/teacher weights + spec + metrics, written atomically, verified on load.

A checkpoint is a plain ``torch.save`` dict (``format``, ``spec``, ``state_dict``, ``metrics``,
``meta``) so anyone can read it with ``torch.load(path, weights_only=True)``. Next to it a
``<file>.sha256`` holds its hash; loading verifies it when present, so a corrupted or half-copied
file is reported instead of silently used.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch

from curriculum_search.errors import CheckpointError
from curriculum_search.models.detector import Detector
from curriculum_search.models.spec import DetectorSpec
from curriculum_search.utils.config import from_dict, to_dict
from curriculum_search.utils.io import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file

MODEL_FORMAT = "curriculum_search/model-v1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` with ``torch.save`` and its sha256 sidecar."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = sha256_bytes(data)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.unlink(missing_ok=True)  # never leave an old hash next to a new file
    atomic_write_bytes(path, data)
    atomic_write_text(sidecar, digest + "\n")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); any problem is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text().strip()
        if expected and sha256_file(path) != expected:
            raise CheckpointError(path, "corrupt checkpoint (sha256 does not match its .sha256 file)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            path,
            f"corrupt or unreadable checkpoint ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})",
        ) from None
    except Exception as exc:  # pickle.UnpicklingError for disallowed globals, etc.
        raise CheckpointError(path, f"unsafe or unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def save_detector(
    path: str | Path,
    model: Detector,
    metrics: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write model weights only (no optimizer, no teacher) with its spec and metrics."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "spec": to_dict(_unwrap(model).spec),
        "state_dict": state,
        "metrics": dict(metrics or {}),
        "meta": dict(meta or {}),
    }
    return save_checkpoint(path, payload)


def read_spec(ckpt: dict[str, Any], path: str | Path) -> DetectorSpec:
    if ckpt.get("format") != MODEL_FORMAT or "spec" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            path, f"not a curriculum_search model checkpoint (format {ckpt.get('format')!r})"
        )
    return from_dict(DetectorSpec, ckpt["spec"], path=path, prefix="spec")


def load_detector_weights(model: Detector, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's weights into an existing model, refusing another architecture."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") == MODEL_FORMAT:
        spec = read_spec(ckpt, path)
        want = _unwrap(model).spec
        for field in ("arch", "backbone", "num_classes", "fpn_channels"):
            if getattr(spec, field) != getattr(want, field):
                raise CheckpointError(
                    path,
                    f"checkpoint is for {field}={getattr(spec, field)!r}, the model has {getattr(want, field)!r}",
                )
        state = ckpt["state_dict"]
    else:
        state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    load_state_checked(model, state, path)
    return ckpt


def load_state_checked(model: Detector, state: dict[str, Any], path: str | Path) -> None:
    try:
        _unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise CheckpointError(path, f"weights do not fit this architecture ({first[:160]})") from None


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)
