"""Registry and base class of the feature-level distillation losses.

A loss is one file that subclasses :class:`FeatureLoss` and registers itself with
:func:`register_feature_loss`. The trainer builds it with :func:`build_feature_loss` from the name
and parameters written in a curriculum stage. Parameters are the keyword-only arguments of the
class' ``__init__`` (their defaults are the paper's setting), so the signature is the schema.

Conventions shared by every loss:

* ``forward(student, teacher, targets, image_size)`` takes one map per FPN level, student
  ``(B, Cs, H, W)`` and teacher ``(B, Ct, H, W)`` already at the same ``H, W`` (see
  :func:`~curriculum_search.distill.feature.align.align_features`), and returns a scalar.
* Teacher maps are detached and cast to the student's device and dtype (a cache stores fp16).
* Learnable parts (1×1 adapters, generators, context blocks) live in the module: optimise them with
  the student and drop them after training. ``adapter="auto"`` is the identity when ``Cs == Ct``
  and a 1×1 conv otherwise; ``adapter="conv"`` always uses a 1×1 conv.
* The returned value already includes the paper's coefficient: a curriculum weight of 1.0 reproduces
  the paper's setting. Levels are summed, as in the reference implementations (one loss per level).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from curriculum_search.utils.config import FieldError

Targets = Sequence[Mapping[str, Any]]

_FL = TypeVar("_FL", bound="FeatureLoss")

# name -> (class, parameter defaults that override the class' own, e.g. for an alias)
_REGISTRY: dict[str, tuple[type[FeatureLoss], dict[str, Any]]] = {}

ADAPTER_CHOICES = ("auto", "conv")


def register_feature_loss(name: str, **defaults: Any) -> Callable[[type[_FL]], type[_FL]]:
    """Class decorator registering a :class:`FeatureLoss` under ``name``.

    Args:
        name: Registry name used in curricula (lower case, unique).
        **defaults: Parameter defaults overriding the class' own, so one class can be registered
            under an alias with another setting (``mse`` and ``tadf_feature``). Each must be a
            keyword-only parameter of the class.

    Returns:
        The decorator, which returns the class unchanged.
    """

    def decorator(cls: type[_FL]) -> type[_FL]:
        if name in _REGISTRY:
            raise ValueError(f"feature loss {name!r} is registered twice")
        allowed = _class_params(cls)
        unknown = sorted(set(defaults) - set(allowed))
        if unknown:
            raise ValueError(f"feature loss {name!r}: default for unknown parameter {unknown[0]!r}")
        if "name" not in cls.__dict__:
            cls.name = name
        _REGISTRY[name] = (cls, dict(defaults))
        return cls

    return decorator


def list_feature_losses() -> list[str]:
    """Sorted names of the registered feature losses."""
    return sorted(_REGISTRY)


def feature_loss_params(name: str) -> dict[str, Any]:
    """Parameters accepted by loss ``name`` with their default values (alias defaults applied).

    Raises:
        ValueError: (a :class:`~curriculum_search.utils.config.FieldError` on field ``name``) if
            the loss is unknown.
    """
    cls, overrides = _lookup(name)
    return {**_class_params(cls), **overrides}


def build_feature_loss(
    name: str, student_channels: int, teacher_channels: int, num_levels: int, **params: Any
) -> FeatureLoss:
    """Build the registered loss ``name`` for the given channels and number of FPN levels.

    Args:
        name: Registry name (see :func:`list_feature_losses`).
        student_channels: Channels ``Cs`` of the student's FPN maps.
        teacher_channels: Channels ``Ct`` of the teacher's FPN maps.
        num_levels: Number of FPN levels passed to ``forward`` (one adapter/generator per level).
        **params: Loss parameters; unspecified ones take the paper's defaults.

    Raises:
        ValueError: a :class:`~curriculum_search.utils.config.FieldError` whose one-line message
            names the field (``name`` or the parameter) and lists the allowed names/parameters,
            for an unknown loss, an unknown parameter or an invalid value.
    """
    cls, overrides = _lookup(name)
    allowed = _class_params(cls)
    for key in params:
        if key not in allowed:
            raise FieldError(
                key, f"unknown parameter of feature loss {name!r} (allowed: {', '.join(sorted(allowed))})"
            )
    return cls(student_channels, teacher_channels, num_levels, **{**overrides, **params})


def _lookup(name: str) -> tuple[type[FeatureLoss], dict[str, Any]]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise FieldError(
            "name", f"unknown feature loss {name!r} (allowed: {', '.join(list_feature_losses())})"
        )
    return _REGISTRY[name]


def _class_params(cls: type[FeatureLoss]) -> dict[str, Any]:
    """Keyword-only parameters of ``cls.__init__`` with their defaults."""
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_number(
    loss: str,
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Validate a numeric loss parameter and return it as a float.

    Raises:
        ValueError: (:class:`~curriculum_search.utils.config.FieldError` on ``field``) if ``value``
            is not a number or lies outside ``[low, high]`` (open ends when ``low_open``/``high_open``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"feature loss {loss!r}: expected a number, got {value!r}")
    v = float(value)
    ok = v == v  # not NaN
    if low is not None:
        ok = ok and (v > low if low_open else v >= low)
    if high is not None:
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = (
            f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        )
        raise FieldError(field, f"feature loss {loss!r}: must be in {rng}, got {value!r}")
    return v


def check_bool(loss: str, field: str, value: Any) -> bool:
    """Validate a boolean loss parameter (raises ``FieldError`` otherwise)."""
    if not isinstance(value, bool):
        raise FieldError(field, f"feature loss {loss!r}: expected true/false, got {value!r}")
    return value


def check_choice(loss: str, field: str, value: Any, choices: Sequence[str]) -> str:
    """Validate a string loss parameter against ``choices`` (raises ``FieldError`` otherwise)."""
    if value not in choices:
        raise FieldError(
            field, f"feature loss {loss!r}: must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return str(value)


def _check_channels(loss: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FieldError(field, f"feature loss {loss!r}: expected a positive integer, got {value!r}")
    return value


class FeatureLoss(nn.Module):
    """Base class: per-level adapters, input checks and teacher detaching/casting.

    Subclasses declare their parameters as keyword-only ``__init__`` arguments, call
    ``super().__init__(student_channels, teacher_channels, num_levels, adapter=adapter)`` and
    implement :meth:`compute`, which receives the adapted student maps (``Ct`` channels) and the
    detached teacher maps in the student's dtype.

    Attributes:
        name: Registry name (set by :func:`register_feature_loss`).
        adapters: One module per level mapping ``Cs`` to ``Ct`` channels (identity or 1×1 conv).
    """

    name: ClassVar[str] = "feature"

    def __init__(
        self, student_channels: int, teacher_channels: int, num_levels: int, *, adapter: str = "auto"
    ) -> None:
        super().__init__()
        self.student_channels = _check_channels(self.name, "student_channels", student_channels)
        self.teacher_channels = _check_channels(self.name, "teacher_channels", teacher_channels)
        self.num_levels = _check_channels(self.name, "num_levels", num_levels)
        self.adapter = check_choice(self.name, "adapter", adapter, ADAPTER_CHOICES)
        self.adapters = nn.ModuleList(
            [self._make_adapter(student_channels, teacher_channels, adapter) for _ in range(num_levels)]
        )

    @staticmethod
    def _make_adapter(cs: int, ct: int, mode: str) -> nn.Module:
        if mode == "auto" and cs == ct:
            return nn.Identity()
        return nn.Conv2d(cs, ct, kernel_size=1)

    @property
    def uses_targets(self) -> bool:
        """Whether ``forward`` reads ``targets`` (ground-truth boxes); False by default."""
        return False

    def forward(
        self,
        student: Sequence[Tensor],
        teacher: Sequence[Tensor],
        targets: Targets | None = None,
        image_size: int | None = None,
    ) -> Tensor:
        """Compute the loss over all levels.

        Args:
            student: Per level student maps ``(B, Cs, H, W)``.
            teacher: Per level teacher maps ``(B, Ct, H, W)``, same ``B, H, W`` as the student
                (any float dtype, e.g. fp16 from a cache; never receives gradients).
            targets: Torchvision-style target dicts (``boxes`` ``(N, 4)`` xyxy in input pixels);
                images may have no boxes. ``None`` means no boxes at all.
            image_size: Side ``S`` of the square input images, in pixels (needed by losses that
                use boxes: ``stride = S / W`` per level).

        Returns:
            Scalar loss in the student's dtype, paper coefficient included.
        """
        s, t = self.prepare(student, teacher)
        return self.compute(s, t, targets, image_size)

    def prepare(
        self, student: Sequence[Tensor], teacher: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Check shapes, detach/cast the teacher maps and apply the per-level adapters."""
        if len(student) != self.num_levels or len(teacher) != self.num_levels:
            raise ValueError(
                f"feature loss {self.name!r}: built for {self.num_levels} levels, got "
                f"{len(student)} student and {len(teacher)} teacher maps"
            )
        out_s: list[Tensor] = []
        out_t: list[Tensor] = []
        for level, (s, t) in enumerate(zip(student, teacher)):
            if s.dim() != 4 or t.dim() != 4:
                raise ValueError(f"feature loss {self.name!r}: level {level}: expected 4-D maps (B, C, H, W)")
            if s.shape[0] != t.shape[0] or s.shape[-2:] != t.shape[-2:]:
                raise ValueError(
                    f"feature loss {self.name!r}: level {level}: student {tuple(s.shape)} and teacher "
                    f"{tuple(t.shape)} differ in batch or spatial size (align them first)"
                )
            if s.shape[1] != self.student_channels or t.shape[1] != self.teacher_channels:
                raise ValueError(
                    f"feature loss {self.name!r}: level {level}: expected {self.student_channels} student and "
                    f"{self.teacher_channels} teacher channels, got {s.shape[1]} and {t.shape[1]}"
                )
            out_s.append(self.adapters[level](s))
            out_t.append(t.detach().to(device=s.device, dtype=s.dtype))
        return out_s, out_t

    def compute(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: Targets | None,
        image_size: int | None,
    ) -> Tensor:
        """Loss from adapted student maps ``(B, Ct, H, W)`` and detached teacher maps."""
        raise NotImplementedError

    def _stride(self, image_size: int | None, width: int) -> float:
        """Input pixels per feature cell for a map of ``width`` cells."""
        if image_size is None or image_size <= 0:
            raise ValueError(
                f"feature loss {self.name!r}: needs image_size (input side in pixels) to use boxes"
            )
        return float(image_size) / float(width)


__all__ = [
    "ADAPTER_CHOICES",
    "FeatureLoss",
    "Targets",
    "build_feature_loss",
    "check_bool",
    "check_choice",
    "check_number",
    "feature_loss_params",
    "list_feature_losses",
    "register_feature_loss",
]
