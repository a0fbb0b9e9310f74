"""Search-space files: what a study searches over, validated, plus its Optuna sampler and pruner.

A space file is YAML; every block is a frozen dataclass built with
:func:`~curriculum_search.utils.config.from_dict`, so unknown keys, wrong types and out-of-range
values are :class:`~curriculum_search.errors.ConfigError` naming the file and the dotted key::

    name: default                 # study name (studies/<name>/)
    seed: 0
    data: {kind: synthetic, image_size: 128}
    student: {arch: fcos, backbone: mobilenetv3_small_050, num_classes: 6, fpn_channels: 32}
    teachers:                     # the pool, frozen per study
      mine:  {checkpoint: runs/teacher.pt}
      tv:    {spec: {arch: fcos, backbone: torchvision, num_classes: 90, weights: "torchvision:DEFAULT"}}
      small: {zoo: {spec: {arch: fcos, backbone: resnet10t, num_classes: 6}, iterations: 1500}}
    proxy:   {iterations: 300, train_subset: 256, val_subset: 96, eval_every: 100}
    full:    {iterations: 1200}
    search:  {n_stages: [1, 3], feature_losses: [mgd, cwd, mse, none], lr: [0.0005, 0.005]}
    sampler: {name: tpe}
    pruner:  {name: median}
    trials: 20

Relative paths in a space file (data folders/annotation files, teacher checkpoints, checkpoint
``weights`` of a spec) are relative to the folder of the space file; :func:`load_space` makes them
absolute, so a loaded :class:`SearchSpace` (and the copy a study saves) does not depend on the
working directory.

The blocks of the file are the dataclasses of :mod:`curriculum_search.search.space_blocks`, its
sampler and pruner come from :mod:`curriculum_search.search.samplers`; this module loads, saves and
hashes a space and re-exports those names (``from curriculum_search.search.space import ...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from curriculum_search.models.spec import DetectorSpec
from curriculum_search.search.samplers import (
    PRUNERS,
    SAMPLERS,
    default_warmup_steps,
    first_stage_min_iterations,
    make_pruner,
    make_sampler,
    pruning_allowed,
)
from curriculum_search.search.space_blocks import (
    FALLBACK_DECAYS,
    FALLBACK_FEATURE_LOSSES,
    NO_FEATURE,
    PSEUDO_FORMS,
    Constraints,
    FullConfig,
    PoolEntry,
    ProxyConfig,
    PrunerConfig,
    SamplerConfig,
    SearchDims,
    SearchSpace,
    SelectionConfig,
    ZooTrain,
    known_decays,
    known_feature_losses,
)
from curriculum_search.utils.config import from_dict, to_dict
from curriculum_search.utils.io import dump_yaml, load_yaml, sha256_file, stable_hash

# -- loading --------------------------------------------------------------------------------------


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a search-space YAML file; relative paths become relative to its folder.

    Raises:
        ConfigError: naming the file and dotted key (malformed YAML, unknown key, wrong type, value
            out of range, unknown teacher/loss/decay/sampler/pruner).
    """
    path = Path(path)
    space = space_from_dict(load_yaml(path), source=path, base_dir=path.resolve().parent)
    make_sampler(space, source=path)  # Optuna's own checks of sampler/pruner values, reported here
    make_pruner(space, source=path)
    return space


def space_from_dict(
    data: Mapping[str, Any], *, source: str | Path | None = None, base_dir: Path | None = None
) -> SearchSpace:
    """Build a :class:`SearchSpace` from a mapping; relative paths resolve against ``base_dir``."""
    space = from_dict(SearchSpace, data, path=source)
    if base_dir is not None:
        space = _resolve_paths(space, base_dir)
    return space


def save_space(space: SearchSpace, path: str | Path) -> Path:
    """Write ``space`` as YAML (atomically); :func:`load_space` reads it back equal."""
    path = Path(path)
    dump_yaml(to_dict(space), path)
    return path


def _abs(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _spec_abs(spec: DetectorSpec, base: Path) -> DetectorSpec:
    w = spec.weights
    if w is None or w == "timm" or w.startswith("torchvision:"):
        return spec
    return spec.with_updates(weights=_abs(w, base))


def _resolve_paths(space: SearchSpace, base: Path) -> SearchSpace:
    data = space.data
    data = dataclasses.replace(
        data,
        train_images=_abs(data.train_images, base),
        train_ann=_abs(data.train_ann, base),
        val_images=_abs(data.val_images, base),
        val_ann=_abs(data.val_ann, base),
        unlabeled_dir=_abs(data.unlabeled_dir, base),
    )
    pool: dict[str, PoolEntry] = {}
    for name, entry in space.teachers.items():
        if entry.checkpoint is not None:
            entry = dataclasses.replace(entry, checkpoint=_abs(entry.checkpoint, base))
        elif entry.spec is not None:
            entry = dataclasses.replace(entry, spec=_spec_abs(entry.spec, base))
        elif entry.zoo is not None:
            entry = dataclasses.replace(
                entry, zoo=dataclasses.replace(entry.zoo, spec=_spec_abs(entry.zoo.spec, base))
            )
        pool[name] = entry
    return dataclasses.replace(space, data=data, teachers=pool, student=_spec_abs(space.student, base))


# -- hashes ---------------------------------------------------------------------------------------


def zoo_key(space: SearchSpace, name: str) -> str:
    """Hash of a zoo teacher's training (its ``zoo`` block and the space's ``data`` block).

    Raises:
        KeyError: ``name`` is not a zoo entry of the pool.
    """
    entry = space.teachers[name]
    if entry.zoo is None:
        raise KeyError(f"teacher {name!r} is not a zoo entry")
    return stable_hash({"zoo": to_dict(entry.zoo), "data": to_dict(space.split_data("selection"))})


def pool_hash(space: SearchSpace) -> str:
    """Stable hash of the teacher pool (names and what each teacher is).

    A checkpoint teacher counts by the sha256 of its file when it exists (so replacing the file
    changes the hash), else by its path; a spec teacher by its spec; a zoo teacher by
    :func:`zoo_key`. Stored as a study attribute: a changed pool means a new study.
    """
    parts: dict[str, Any] = {}
    for name in sorted(space.teachers):
        entry = space.teachers[name]
        if entry.checkpoint is not None:
            p = Path(entry.checkpoint)
            parts[name] = (
                {"checkpoint_sha256": sha256_file(p)} if p.is_file() else {"checkpoint": entry.checkpoint}
            )
        elif entry.spec is not None:
            parts[name] = {"spec": to_dict(entry.spec)}
        else:
            parts[name] = {"zoo": zoo_key(space, name)}
    return stable_hash(parts)


__all__ = [
    "FALLBACK_DECAYS",
    "FALLBACK_FEATURE_LOSSES",
    "NO_FEATURE",
    "PRUNERS",
    "PSEUDO_FORMS",
    "SAMPLERS",
    "Constraints",
    "FullConfig",
    "PoolEntry",
    "ProxyConfig",
    "PrunerConfig",
    "SamplerConfig",
    "SearchDims",
    "SearchSpace",
    "SelectionConfig",
    "ZooTrain",
    "default_warmup_steps",
    "first_stage_min_iterations",
    "known_decays",
    "known_feature_losses",
    "load_space",
    "make_pruner",
    "make_sampler",
    "pool_hash",
    "pruning_allowed",
    "save_space",
    "space_from_dict",
    "zoo_key",
]
