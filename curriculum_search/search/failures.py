"""Which trial failures are the environment's (disk, data files, checkpoints, GPU), not the
curriculum's, and the per-trial wall-clock limit.

A curriculum can fail on its own (a non-finite loss, out of memory at its batch size): that is a
result, the trial counts. A full disk, an unreadable data file, a missing teacher checkpoint or a
broken GPU fails every trial alike: such a failure is re-queued (it does not count toward the
target), and a few in a row stop the study with one line naming the cause, so a fault at trial 10
of 100 does not "finish" the study with 90 failures.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from curriculum_search.errors import CheckpointError, DataError
from curriculum_search.search.space import SearchSpace

#: Environment failures in a row (no trial finishing in between) that stop the study.
ENV_FAILURE_LIMIT = 3
#: Free bytes under which a trial that died without a result is taken for a full disk.
LOW_DISK_BYTES = 16 << 20

_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "I/O error",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "file not found",
    errno.ESTALE: "stale network file handle",
    errno.ENOTCONN: "storage disconnected",
}
_GPU_MARKERS = ("cuda error", "cudnn error", "cublas", "nccl error", "cuda driver", "no cuda gpus")


def environment_cause(exc: BaseException) -> str | None:
    """A short cause (``"disk full"``, ``"CUDA error"``...) when ``exc`` is the environment's
    fault, else ``None`` (the curriculum's own failure: it counts)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return _ERRNOS[e.errno]
        if isinstance(e, CheckpointError):
            return "missing or unreadable checkpoint"
        if isinstance(e, DataError):
            return "unreadable data"
        text = str(e).lower()
        if "out of memory" not in text and any(m in text for m in _GPU_MARKERS):
            return "CUDA error"
        e = e.__cause__ or e.__context__
    return None


def low_disk(path: Path) -> bool:
    """True when the file system of ``path`` is (nearly) full."""
    try:
        return shutil.disk_usage(path).free < LOW_DISK_BYTES
    except OSError:
        return False


def trial_time_limit(space: SearchSpace) -> float:
    """Seconds a proxy trial may run before it is killed as hung: the space's ``trial_timeout_s``,
    or 600 s plus 6 s per proxy iteration and seed (generous: a 64 px proxy iteration takes well
    under a second on a CPU; a trial that stopped making progress is what this catches)."""
    if space.trial_timeout_s is not None:
        return float(space.trial_timeout_s)
    return 600.0 + 6.0 * space.proxy.iterations * max(1, space.proxy.seeds)


def race_time_limit(space: SearchSpace, iterations: int) -> float:
    """Seconds a race run of ``iterations`` may run before it is killed as hung: the proxy trial's
    limit scaled to its length (one seed)."""
    if space.trial_timeout_s is not None:
        return float(space.trial_timeout_s) * max(1.0, iterations / space.proxy.iterations)
    return 600.0 + 6.0 * iterations


__all__ = ["ENV_FAILURE_LIMIT", "environment_cause", "low_disk", "race_time_limit", "trial_time_limit"]
