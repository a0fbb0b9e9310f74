"""Teacher-ordering heuristic: the cheapest chain of adaptations from the student to the strongest.

MTPD orders teachers so that each stage's teacher is *close* to the student the previous stage
produced. The cost of a step from model A to model B (:func:`adaptation_cost`) is how badly a cheap
adapter maps A's FPN maps onto B's on a calibration batch: a 1×1 convolution per FPN level fitted
to predict B's map from A's, scored by the normalised MSE (``MSE / var(B)``; 0 = B is a linear
function of A, 1 = no better than B's mean), averaged over levels — or ``1 − linear CKA``.
:func:`heuristic_order` picks, among chains ``student → t_1 → … → strongest`` with at most
``n_stages`` teachers, the one whose step costs have the smallest sum (or smallest maximum).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curriculum_search.models.detector import Detector

Metric = Literal["mse", "cka"]
Solver = Literal["lstsq", "adam"]
Criterion = Literal["sum", "max"]

#: Node name of the student in chain searches (teacher names cannot contain ``<``).
STUDENT = "<student>"
#: Pools up to this size are searched exhaustively; larger ones greedily.
EXHAUSTIVE_MAX_POOL = 7


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al., 2019) of two representations of the same ``N`` samples.

    ``CKA(X, Y) = ‖Ycᵀ Xc‖²_F / (‖Xcᵀ Xc‖_F · ‖Ycᵀ Yc‖_F)`` with column-centred ``Xc``, ``Yc``;
    1 for identical (or orthogonally transformed, isotropically scaled) representations, 0 for
    unrelated ones. Computed in float64.

    Args:
        x: ``(N, Dx)`` features.
        y: ``(N, Dy)`` features.

    Raises:
        ValueError: the two do not have the same number of rows.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"linear_cka needs (N, Dx) and (N, Dy) matrices, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    xc = x.detach().to(torch.float64)
    yc = y.detach().to(torch.float64)
    xc = xc - xc.mean(0, keepdim=True)
    yc = yc - yc.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if float(denom) == 0.0:
        return 0.0
    return float(cross / denom)


def _flatten(feat: Tensor) -> Tensor:
    """``(B, C, H, W)`` map → ``(B·H·W, C)`` float64 samples (a normal tensor, usable by autograd)."""
    out = feat.detach().permute(0, 2, 3, 1).reshape(-1, feat.shape[1]).to(torch.float64)
    return out.clone() if out.is_inference() else out


def _align(
    src_feats: Sequence[Tensor],
    dst_feats: Sequence[Tensor],
    src_strides: Sequence[float] | None = None,
    dst_strides: Sequence[float] | None = None,
) -> list[Tensor]:
    """Destination maps matched to the source levels (nearest stride, resized to the source's size).

    Without strides: identical level shapes match level by level; otherwise, since both lists come
    from the same images, a level's stride is taken as ``1 / width``.
    """
    if src_strides is None or dst_strides is None:
        if [f.shape[-2:] for f in src_feats] == [f.shape[-2:] for f in dst_feats]:
            return list(dst_feats)
        src_strides = [1.0 / f.shape[-1] for f in src_feats]
        dst_strides = [1.0 / f.shape[-1] for f in dst_feats]
    try:
        from curriculum_search.distill.feature.align import align_features
    except ImportError:  # pragma: no cover - the distill package is part of the project
        out = []
        for s, st in zip(src_feats, src_strides):
            j = min(
                range(len(dst_feats)), key=lambda k: (abs(math.log2(st / dst_strides[k])), dst_strides[k])
            )
            d = dst_feats[j]
            if d.shape[-2:] != s.shape[-2:]:
                d = F.interpolate(d.float(), size=tuple(s.shape[-2:]), mode="bilinear", align_corners=False)
            out.append(d)
        return out
    return align_features(list(src_feats), list(dst_feats), list(src_strides), list(dst_strides))


def _fit_lstsq(x: Tensor, y: Tensor, ridge: float) -> Tensor:
    """Residual of the ridge least-squares 1×1 map ``y ≈ x W + b`` (closed form, centred)."""
    xc = x - x.mean(0, keepdim=True)
    yc = y - y.mean(0, keepdim=True)
    gram = xc.T @ xc
    scale = float(torch.trace(gram)) / max(1, gram.shape[0])
    reg = ridge * (scale if scale > 0 else 1.0)
    w = torch.linalg.solve(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)
    return xc @ w - yc


def _fit_adam(x: Tensor, y: Tensor, iters: int, lr: float) -> Tensor:
    """Residual of a 1×1 map fitted by ``iters`` full-batch Adam steps (inputs standardised)."""
    x = (x - x.mean(0, keepdim=True)) / x.std(0, keepdim=True).clamp_min(1e-6)
    yc = y - y.mean(0, keepdim=True)
    scale = yc.std().clamp_min(1e-12)
    target = yc / scale
    layer = nn.Linear(x.shape[1], y.shape[1], dtype=torch.float64)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(iters):
            opt.zero_grad()
            loss = F.mse_loss(layer(x), target)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (layer(x) - target) * scale


def adaptation_cost(
    src_feats: Sequence[Tensor],
    dst_feats: Sequence[Tensor],
    iters: int = 200,
    lr: float = 1e-2,
    *,
    metric: Metric = "mse",
    solver: Solver = "lstsq",
    ridge: float = 1e-3,
    src_strides: Sequence[float] | None = None,
    dst_strides: Sequence[float] | None = None,
) -> float:
    """How hard it is to adapt model A's FPN maps (``src``) to model B's (``dst``); 0 = trivial.

    Destination levels are first matched to the source levels (nearest stride, resized; see
    :func:`~curriculum_search.distill.feature.align.align_features`); without strides, identical
    level shapes match one to one, else strides are inferred from the map widths. Then, per level, with
    ``X`` = source samples ``(B·H·W, Cs)`` and ``Y`` = destination samples ``(B·H·W, Ct)``:

    * ``metric="mse"``: fit a 1×1 convolution ``Y ≈ X W + b`` and score the normalised MSE
      ``mean((X W + b − Y)²) / mean((Y − mean(Y))²)`` (per-channel means); ``solver="lstsq"``
      (default) solves the ridge-regularised least squares in closed form (ridge
      ``ridge × trace(XcᵀXc) / Cs``), i.e. the optimum the iterative fit approaches;
      ``solver="adam"`` runs ``iters`` full-batch Adam steps at ``lr`` from zero weights.
    * ``metric="cka"``: ``1 − linear_cka(X, Y)`` (no fit; ``iters``, ``lr``, ``solver`` unused).

    The result is the mean over levels. The score is measured on the calibration samples
    themselves: a level with fewer positions than channels fits almost perfectly, so give the
    calibration batch enough images (e.g. 16 at 128 px).

    Args:
        src_feats: source FPN maps ``(B, Cs, H, W)``, finest first.
        dst_feats: destination maps of the same images (any level count/strides/channels).
        iters: Adam steps (``solver="adam"``), default 200.
        lr: Adam learning rate, default 1e-2.
        metric: ``"mse"`` (default) or ``"cka"``.
        solver: ``"lstsq"`` (default) or ``"adam"``.
        ridge: relative ridge of the closed-form fit, default 1e-3.
        src_strides / dst_strides: level strides in input pixels (``Detector.strides``), optional.

    Raises:
        ValueError: empty feature lists, different batch sizes, unknown metric/solver.
    """
    if not src_feats or not dst_feats:
        raise ValueError("adaptation_cost needs at least one feature map on each side")
    if src_feats[0].shape[0] != dst_feats[0].shape[0]:
        raise ValueError(f"batch sizes differ: {src_feats[0].shape[0]} vs {dst_feats[0].shape[0]}")
    if metric not in ("mse", "cka"):
        raise ValueError(f"unknown metric {metric!r} (use 'mse' or 'cka')")
    if solver not in ("lstsq", "adam"):
        raise ValueError(f"unknown solver {solver!r} (use 'lstsq' or 'adam')")
    aligned = _align(src_feats, dst_feats, src_strides, dst_strides)
    costs = []
    for s, d in zip(src_feats, aligned):
        x, y = _flatten(s), _flatten(d.to(s.device))
        if metric == "cka":
            costs.append(1.0 - linear_cka(x, y))
            continue
        var = float(((y - y.mean(0, keepdim=True)) ** 2).mean())
        resid = _fit_lstsq(x, y, ridge) if solver == "lstsq" else _fit_adam(x, y, iters, lr)
        mse = float((resid**2).mean())
        costs.append(0.0 if var <= 1e-20 else mse / var)
    return float(sum(costs) / len(costs))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def extract_features(model: Detector, images: Tensor) -> list[Tensor]:
    """FPN maps of ``model`` on ``images`` (eval mode, ``inference_mode``; modes restored after)."""
    device = next(iter(model.parameters())).device
    with _eval_mode(model), torch.inference_mode():
        return [f.float() for f in model.features(images.to(device))]


def best_chain(
    cost: Callable[[str, str], float],
    start: str,
    end: str,
    candidates: Sequence[str],
    max_teachers: int,
    criterion: Criterion = "sum",
) -> list[str]:
    """Cheapest chain ``start → c_1 → … → end`` with at most ``max_teachers`` nodes after ``start``.

    The chain's score is the sum (or the maximum) of its step costs ``cost(a, b)``. Up to
    :data:`EXHAUSTIVE_MAX_POOL` candidates every ordered subset is tried (ties: fewer steps, then
    names); beyond, a greedy insertion: from the current node, step to the intermediate ``c`` that
    minimises ``cost(cur, c) ⊕ cost(c, end)`` while that beats ``cost(cur, end)``.

    Returns:
        The chain without ``start``, ending with ``end``.
    """
    if max_teachers < 1:
        raise ValueError(f"a chain needs at least one teacher, got max_teachers={max_teachers}")
    if criterion not in ("sum", "max"):
        raise ValueError(f"unknown criterion {criterion!r} (use 'sum' or 'max')")
    cands = [c for c in candidates if c not in (start, end)]
    agg: Callable[[list[float]], float] = sum if criterion == "sum" else max  # type: ignore[assignment]

    def score(chain: Sequence[str]) -> float:
        nodes = [start, *chain]
        return float(agg([cost(a, b) for a, b in itertools.pairwise(nodes)]))

    if len(cands) + 1 <= EXHAUSTIVE_MAX_POOL:
        best: tuple[float, int, tuple[str, ...]] | None = None
        for k in range(min(max_teachers - 1, len(cands)) + 1):
            for perm in itertools.permutations(cands, k):
                cand = (*perm, end)
                item = (score(cand), len(cand), cand)
                if best is None or item < best:
                    best = item
        assert best is not None
        return list(best[2])
    chain: list[str] = []
    cur, left = start, list(cands)
    while len(chain) < max_teachers - 1 and left:
        direct = cost(cur, end)
        via = {c: float(agg([cost(cur, c), cost(c, end)])) for c in left}
        c = min(left, key=lambda n: (via[n], n))
        if via[c] >= direct:
            break
        chain.append(c)
        left.remove(c)
        cur = c
    return [*chain, end]


def strongest_teacher(teacher_ap: Mapping[str, float], names: Sequence[str]) -> str:
    """The teacher with the highest AP among ``names`` (ties: the first by name)."""
    missing = [n for n in names if n not in teacher_ap]
    if missing:
        raise ValueError(f"no AP for teacher(s) {', '.join(missing)}")
    return min(names, key=lambda n: (-float(teacher_ap[n]), n))


def heuristic_order(
    student: Detector,
    teachers: Mapping[str, Detector],
    calib_images: Tensor,
    teacher_ap: Mapping[str, float],
    n_stages: int,
    *,
    metric: Metric = "mse",
    criterion: Criterion = "sum",
    solver: Solver = "lstsq",
    iters: int = 200,
    lr: float = 1e-2,
) -> list[str]:
    """Teacher order of the adaptation-cost heuristic (the MTPD warm start).

    The chain starts at the student and ends at the strongest teacher (highest ``teacher_ap``),
    through at most ``n_stages − 1`` intermediate teachers, minimising the sum (``criterion="sum"``)
    or the largest (``"max"``) of the step costs ``adaptation_cost(features(a), features(b))``;
    exhaustive for pools up to 7 teachers, greedy beyond. Features are computed once per model on
    ``calib_images`` (``Detector.features`` under ``inference_mode``, eval mode).

    Note that with ``"sum"`` an intermediate teacher is only chosen if the two steps through it
    cost less than the direct step; ``"max"`` favours chains of small steps.

    Args:
        student: the student (its initial weights).
        teachers: the candidate teachers by name.
        calib_images: ``(B, 3, S, S)`` normalised calibration batch.
        teacher_ap: AP of each teacher (picks the last teacher).
        n_stages: most teachers in the chain (>= 1).
        metric / criterion / solver / iters / lr: see :func:`adaptation_cost` and :func:`best_chain`.

    Returns:
        Teacher names, student side first, ending with the strongest teacher.
    """
    if not teachers:
        raise ValueError("heuristic_order needs at least one teacher")
    names = sorted(teachers)
    end = strongest_teacher(teacher_ap, names)
    models: dict[str, Detector] = {STUDENT: student, **{n: teachers[n] for n in names}}
    feats = {name: extract_features(model, calib_images) for name, model in models.items()}
    memo: dict[tuple[str, str], float] = {}

    def cost(a: str, b: str) -> float:
        if (a, b) not in memo:
            memo[(a, b)] = adaptation_cost(
                feats[a],
                feats[b],
                iters,
                lr,
                metric=metric,
                solver=solver,
                src_strides=models[a].strides,
                dst_strides=models[b].strides,
            )
        return memo[(a, b)]

    return best_chain(cost, STUDENT, end, names, n_stages, criterion)


__all__ = [
    "EXHAUSTIVE_MAX_POOL",
    "STUDENT",
    "adaptation_cost",
    "best_chain",
    "extract_features",
    "heuristic_order",
    "linear_cka",
    "strongest_teacher",
]
