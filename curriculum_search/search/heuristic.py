"""Teacher-ordering heuristic of MTPD: teachers ordered by how hard the student adapts to them.

MTPD orders teachers so that the student first learns from the teacher *closest* to it and ends
with the strongest. The closeness of the student to teacher B (:func:`adaptation_cost`) is how
badly a cheap adapter maps the student's FPN maps onto B's: a 1×1 convolution per FPN level fitted
to predict B's map from the student's on some calibration images and **scored on other, held-out
images** by the normalised MSE (``MSE / var(B)``; 0 = B is a linear function of the student,
1 = no better than B's mean), averaged over levels — or ``1 − linear CKA`` on the held-out
images. :func:`heuristic_order` ranks the teachers by that cost, cheapest first, and puts the
strongest (highest AP) last: the MTPD chain, which may be longer than the fewest stages a space
allows (a pool larger than the most stages keeps the cheapest ones and the strongest).
(:func:`best_chain`, a cheapest-path search over pairwise costs, is kept as a utility.)
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


Predictor = Callable[[Tensor], Tensor]


def _fit_lstsq(x: Tensor, y: Tensor, ridge: float) -> Predictor:
    """The ridge least-squares 1×1 map ``y ≈ x W + b`` (closed form, centred), as a predictor."""
    x_mean, y_mean = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    xc = x - x_mean
    gram = xc.T @ xc
    scale = float(torch.trace(gram)) / max(1, gram.shape[0])
    reg = ridge * (scale if scale > 0 else 1.0)
    w = torch.linalg.solve(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ (y - y_mean))
    return lambda z: (z - x_mean) @ w + y_mean


def _fit_adam(x: Tensor, y: Tensor, iters: int, lr: float) -> Predictor:
    """A 1×1 map fitted by ``iters`` full-batch Adam steps (inputs standardised), as a predictor."""
    x_mean, x_std = x.mean(0, keepdim=True), x.std(0, keepdim=True).clamp_min(1e-6)
    y_mean = y.mean(0, keepdim=True)
    scale = (y - y_mean).std().clamp_min(1e-12)
    xs, target = (x - x_mean) / x_std, (y - y_mean) / scale
    layer = nn.Linear(x.shape[1], y.shape[1], dtype=torch.float64)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(iters):
            opt.zero_grad()
            loss = F.mse_loss(layer(xs), target)
            loss.backward()
            opt.step()

    def predict(z: Tensor) -> Tensor:
        with torch.no_grad():
            return layer((z - x_mean) / x_std) * scale + y_mean

    return predict


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
    eval_src: Sequence[Tensor] | None = None,
    eval_dst: Sequence[Tensor] | None = None,
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

    The result is the mean over levels. With ``eval_src``/``eval_dst`` (the two models' maps of
    *other* images) the adapter is fitted on ``src``/``dst`` and scored on those held-out maps
    (CKA is computed on them), as MTPD does; without, it is scored on the fitting samples
    themselves, where a level with fewer positions than channels fits almost perfectly.

    Args:
        src_feats: source FPN maps ``(B, Cs, H, W)``, finest first.
        dst_feats: destination maps of the same images (any level count/strides/channels).
        iters: Adam steps (``solver="adam"``), default 200.
        lr: Adam learning rate, default 1e-2.
        metric: ``"mse"`` (default) or ``"cka"``.
        solver: ``"lstsq"`` (default) or ``"adam"``.
        ridge: relative ridge of the closed-form fit, default 1e-3.
        src_strides / dst_strides: level strides in input pixels (``Detector.strides``), optional.
        eval_src / eval_dst: held-out maps of both models on other images (both or neither).

    Raises:
        ValueError: empty feature lists, different batch sizes, unknown metric/solver, only one
            of the held-out lists.
    """
    if not src_feats or not dst_feats:
        raise ValueError("adaptation_cost needs at least one feature map on each side")
    if src_feats[0].shape[0] != dst_feats[0].shape[0]:
        raise ValueError(f"batch sizes differ: {src_feats[0].shape[0]} vs {dst_feats[0].shape[0]}")
    if metric not in ("mse", "cka"):
        raise ValueError(f"unknown metric {metric!r} (use 'mse' or 'cka')")
    if solver not in ("lstsq", "adam"):
        raise ValueError(f"unknown solver {solver!r} (use 'lstsq' or 'adam')")
    if (eval_src is None) != (eval_dst is None):
        raise ValueError("give both eval_src and eval_dst (held-out maps of the two models) or neither")
    aligned = _align(src_feats, dst_feats, src_strides, dst_strides)
    if eval_src is not None and eval_dst is not None:
        if eval_src[0].shape[0] != eval_dst[0].shape[0]:
            raise ValueError(f"held-out batch sizes differ: {eval_src[0].shape[0]} vs {eval_dst[0].shape[0]}")
        held_src, held_dst = list(eval_src), _align(eval_src, eval_dst, src_strides, dst_strides)
    else:
        held_src, held_dst = list(src_feats), aligned
    costs = []
    for s, d, hs, hd in zip(src_feats, aligned, held_src, held_dst):
        x, y = _flatten(s), _flatten(d.to(s.device))
        xe, ye = _flatten(hs.to(s.device)), _flatten(hd.to(s.device))
        if metric == "cka":
            costs.append(1.0 - linear_cka(xe, ye))
            continue
        var = float(((ye - ye.mean(0, keepdim=True)) ** 2).mean())
        predict = _fit_lstsq(x, y, ridge) if solver == "lstsq" else _fit_adam(x, y, iters, lr)
        mse = float(((predict(xe) - ye) ** 2).mean())
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


def student_adaptation_costs(
    student: Detector,
    teachers: Mapping[str, Detector],
    calib_images: Tensor,
    *,
    metric: Metric = "mse",
    solver: Solver = "lstsq",
    iters: int = 200,
    lr: float = 1e-2,
    holdout_fraction: float = 0.5,
) -> dict[str, float]:
    """Student → teacher adaptation cost of every teacher, measured on held-out images.

    The adapter is fitted on the first ``1 − holdout_fraction`` of ``calib_images`` and scored on
    the rest (:func:`adaptation_cost` with ``eval_src``/``eval_dst``). Features are computed once
    per model (``Detector.features`` under ``inference_mode``, eval mode; modes restored).

    Raises:
        ValueError: no teacher, fewer than 2 calibration images, or a fraction outside (0, 1).
    """
    if not teachers:
        raise ValueError("needs at least one teacher")
    n = int(calib_images.shape[0])
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if n < 2:
        raise ValueError(f"needs at least 2 calibration images (to fit and to score), got {n}")
    n_fit = min(n - 1, max(1, round(n * (1.0 - holdout_fraction))))
    fit, held = calib_images[:n_fit], calib_images[n_fit:]
    s_fit, s_held = extract_features(student, fit), extract_features(student, held)
    out: dict[str, float] = {}
    for name in sorted(teachers):
        t = teachers[name]
        out[name] = adaptation_cost(
            s_fit,
            extract_features(t, fit),
            iters,
            lr,
            metric=metric,
            solver=solver,
            src_strides=student.strides,
            dst_strides=t.strides,
            eval_src=s_held,
            eval_dst=extract_features(t, held),
        )
    return out


def order_by_cost(
    costs: Mapping[str, float], teacher_ap: Mapping[str, float], max_teachers: int
) -> list[str]:
    """MTPD's order: teachers by adaptation cost, cheapest first, the strongest (highest AP) last.

    With more teachers than ``max_teachers``, the cheapest ``max_teachers − 1`` and the strongest
    are kept (in that order). Ties: by name.
    """
    if max_teachers < 1:
        raise ValueError(f"an order needs at least one teacher, got max_teachers={max_teachers}")
    names = sorted(costs)
    end = strongest_teacher(teacher_ap, names)
    rest = sorted((n for n in names if n != end), key=lambda n: (float(costs[n]), n))
    return [*rest[: max_teachers - 1], end]


def heuristic_order(
    student: Detector,
    teachers: Mapping[str, Detector],
    calib_images: Tensor,
    teacher_ap: Mapping[str, float],
    n_stages: int,
    *,
    metric: Metric = "mse",
    solver: Solver = "lstsq",
    iters: int = 200,
    lr: float = 1e-2,
    holdout_fraction: float = 0.5,
) -> list[str]:
    """Teacher order of the adaptation-cost heuristic (the MTPD warm start).

    Teachers ranked by the student → teacher adaptation cost on held-out calibration images
    (:func:`student_adaptation_costs`), cheapest first, the strongest (highest ``teacher_ap``)
    last (:func:`order_by_cost`). Every teacher is kept up to ``n_stages`` (the most stages): the
    order is the heuristic even when it is longer than the fewest stages.

    Args:
        student: the student (its initial weights).
        teachers: the candidate teachers by name.
        calib_images: ``(B, 3, S, S)`` normalised calibration batch, ``B >= 2`` (split into the
            images the adapters are fitted on and the held-out images they are scored on).
        teacher_ap: AP of each teacher (picks the last teacher).
        n_stages: most teachers in the order (>= 1).
        metric / solver / iters / lr: see :func:`adaptation_cost`.
        holdout_fraction: share of ``calib_images`` held out for scoring (default half).

    Returns:
        Teacher names, student side first, ending with the strongest teacher.
    """
    if not teachers:
        raise ValueError("heuristic_order needs at least one teacher")
    strongest_teacher(teacher_ap, sorted(teachers))  # every teacher has an AP
    costs = student_adaptation_costs(
        student,
        teachers,
        calib_images,
        metric=metric,
        solver=solver,
        iters=iters,
        lr=lr,
        holdout_fraction=holdout_fraction,
    )
    return order_by_cost(costs, teacher_ap, n_stages)


__all__ = [
    "EXHAUSTIVE_MAX_POOL",
    "STUDENT",
    "adaptation_cost",
    "best_chain",
    "extract_features",
    "heuristic_order",
    "linear_cka",
    "order_by_cost",
    "strongest_teacher",
    "student_adaptation_costs",
]
