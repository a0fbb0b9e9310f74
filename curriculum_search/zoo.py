"""The teacher zoo moved to :mod:`curriculum_search.search.zoo` (it reads search spaces); this
module keeps the old import path working."""

from __future__ import annotations

from curriculum_search.search.zoo import (
    TeacherInfo,
    build_zoo,
    describe_pool,
    format_pool,
    student_reference,
    supervised_recipe,
    teacher_label_map,
    zoo_recipe,
)

__all__ = [
    "TeacherInfo",
    "build_zoo",
    "describe_pool",
    "format_pool",
    "student_reference",
    "supervised_recipe",
    "teacher_label_map",
    "zoo_recipe",
]
