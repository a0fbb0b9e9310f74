"""Recipes and costs of decoded curricula: a :class:`~curriculum_search.search.choice.CurriculumChoice`
at a budget, seed and split becomes a :class:`~curriculum_search.curriculum.recipe.Recipe`; the
pool's teachers become recipe teachers (zoo entries as their checkpoints)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from curriculum_search.curriculum.recipe import Recipe, TeacherRef
from curriculum_search.search.space import SearchSpace, pool_hash, zoo_key

if TYPE_CHECKING:
    from curriculum_search.search.choice import CurriculumChoice


def zoo_checkpoint_path(space: SearchSpace, name: str, studies_root: str | Path = "studies") -> Path:
    """Where ``zoo build`` writes (and trials read) zoo teacher ``name``:
    ``<studies_root>/_zoo/<name>-<zoo_key>/model.pt``."""
    return Path(studies_root) / "_zoo" / f"{name}-{zoo_key(space, name)}" / "model.pt"


def teacher_refs(space: SearchSpace, studies_root: str | Path = "studies") -> dict[str, TeacherRef]:
    """The pool as recipe teachers: checkpoints and specs as given, zoo entries as their checkpoint.

    A zoo checkpoint is written relative to the studies folder (``_zoo/<name>-<key>/model.pt``),
    which recipes resolve relative teacher paths against, so recipes stay portable;
    ``studies_root`` is accepted for symmetry with :func:`zoo_checkpoint_path` but not used.
    """
    out: dict[str, TeacherRef] = {}
    for name, entry in space.teachers.items():
        if entry.checkpoint is not None:
            out[name] = TeacherRef(checkpoint=entry.checkpoint)
        elif entry.spec is not None:
            out[name] = TeacherRef(spec=entry.spec)
        else:
            # relative to the studies folder, which recipes resolve relative paths against
            out[name] = TeacherRef(checkpoint=str(zoo_checkpoint_path(space, name, ".")))
    return out


def build_recipe(
    space: SearchSpace,
    choice: CurriculumChoice,
    *,
    iterations: int,
    proxy: bool,
    seed: int,
    studies_root: str | Path = "studies",
    split: Literal["selection", "report"] = "selection",
) -> Recipe:
    """A complete recipe for ``choice`` trained for ``iterations`` in total.

    The data never trains on the selection split and evaluates on ``split`` (see
    :meth:`SearchSpace.split_data`).

    ``proxy=True`` takes data subsets, image size and ``eval_every`` from ``space.proxy``;
    ``proxy=False`` from ``space.full`` (null subsets/size keep the data's own). A changed image
    size is applied to the data, the student spec and spec teachers (checkpoint/zoo teachers keep
    theirs). ``train.lr`` is the choice's lr; teachers are the whole pool. ``provenance`` records
    the space, pool hash, curriculum key, description and phase.
    """
    phase = space.proxy if proxy else space.full
    image_size = phase.image_size or space.data.image_size
    base = space.split_data(split)
    data = replace(
        base,
        image_size=image_size,
        train_subset=phase.train_subset if phase.train_subset is not None else base.train_subset,
        val_subset=phase.val_subset if phase.val_subset is not None else base.val_subset,
    )
    eval_every = phase.eval_every if phase.eval_every is not None else space.train.eval_every
    train = replace(space.train, lr=choice.lr, eval_every=eval_every)
    teachers = teacher_refs(space, studies_root)
    if image_size != space.data.image_size:
        teachers = {
            k: TeacherRef(spec=v.spec.with_updates(image_size=image_size)) if v.spec is not None else v
            for k, v in teachers.items()
        }
    return Recipe(
        name=f"{space.name}-{choice.key}",
        student=space.student.with_updates(image_size=image_size),
        stages=choice.to_stages(iterations),
        data=data,
        teachers=teachers,
        train=train,
        seed=seed,
        provenance={
            "space": space.name,
            "pool_hash": pool_hash(space),
            "curriculum_key": choice.key,
            "curriculum": choice.describe(),
            "phase": "proxy" if proxy else "full",
        },
    )


def proxy_cost(
    choice: CurriculumChoice,
    teacher_gflops: Mapping[str, float],
    student_gflops: float,
    total_iterations: int | None = None,
) -> float:
    """Cost of a curriculum: Σ over stages of ``iterations × (teacher GFLOPs + student GFLOPs)``.

    GFLOPs are per image and forward (:func:`curriculum_search.models.cost.measure_cost`); the
    student-only choice costs ``iterations × student GFLOPs``. Compare with
    ``constraints.max_proxy_cost``.
    """
    total = choice.total_iterations if total_iterations is None else total_iterations
    if choice.is_student_only:
        return float(total * student_gflops)
    if choice.pseudo_steps is not None:  # step A runs every teacher at every iteration
        a, b = choice.iterations_for(total)
        fused = sum(teacher_gflops[t] for t in choice.pseudo_steps.teachers)
        return float(a * (fused + student_gflops) + b * student_gflops)
    its = choice.iterations_for(total)
    return float(sum(it * (teacher_gflops[s.teacher] + student_gflops) for s, it in zip(choice.stages, its)))
