"""Shared helpers of the benchmark suite: machine description, statistics, result files, tables,
plots, benchmark task spaces scaled to a size, and the benchmark studies (run through the library's
own :func:`~curriculum_search.search.service.run_search`).

Sizes (``--size``):

* ``ci`` — a few minutes on a 2-core CPU: 64 px images, tens of iterations; checks the plumbing,
  its numbers mean nothing.
* ``cpu`` (default) — the figures quoted in ``PARTS.md``; the whole suite fits ~90 minutes on an
  otherwise idle 2-core CPU.
* ``gpu`` — longer runs and more data for a machine with a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
OUT_DIR = BENCH_DIR / "out"
PLOTS_DIR = BENCH_DIR / "plots"
SPACES_DIR = BENCH_DIR / "spaces"
SIZES = ("ci", "cpu", "gpu")
DEFAULT_SIZE = "cpu"
#: Benchmark tasks: a search-space file in ``benchmarks/spaces/`` each.
TASKS = ("default_small", "shapes_hard")

log = logging.getLogger("benchmarks")


# -- machine ---------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model name (``lscpu``'s "Model name", else ``/proc/cpuinfo``, else ``platform``)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.strip().lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU model and cores, GPU, library versions, date, load."""
    import optuna
    import torch
    import torchvision

    gpu = None
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "optuna": str(optuna.__version__),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_1m": round(load[0], 2),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One line naming the machine, e.g. ``AMD EPYC, 2 cores, no GPU, torch 2.14.1, 2025-01-01``."""
    gpu = info.get("gpu") or "no GPU"
    return (
        f"{info.get('cpu')}, {info.get('cores')} cores, {gpu}, torch {info.get('torch')}, "
        f"optuna {info.get('optuna')}, {str(info.get('date', ''))[:16].replace('T', ' ')} UTC "
        f"(1-min load average at start {info.get('load_average_1m')})"
    )


# -- statistics ------------------------------------------------------------------------------------
def summarize(values: Iterable[float]) -> dict[str, float]:
    """``n``, ``median``, ``min``, ``max``, ``mean`` and sample ``std`` (0 for one value) of ``values``."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {
            "n": 0,
            "median": math.nan,
            "min": math.nan,
            "max": math.nan,
            "mean": math.nan,
            "std": math.nan,
        }
    return {
        "n": len(v),
        "median": statistics.median(v),
        "min": min(v),
        "max": max(v),
        "mean": statistics.fmean(v),
        "std": statistics.stdev(v) if len(v) > 1 else 0.0,
    }


def fmt_range(s: Mapping[str, float], digits: int = 2, unit: str = "") -> str:
    """``median (min–max)``, e.g. ``1.07× (1.02–1.15)``."""
    if not s or not s.get("n"):
        return "n/a"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def fmt_mean_std(s: Mapping[str, float], digits: int = 3) -> str:
    """``mean ± std (n=k)``."""
    if not s or not s.get("n"):
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1)"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} (n={int(s['n'])})"


# -- files and tables ------------------------------------------------------------------------------
def result_path(name: str, out_dir: Path = OUT_DIR) -> Path:
    return out_dir / f"{name}.json"


def write_result(name: str, data: Mapping[str, Any], out_dir: Path = OUT_DIR) -> Path:
    """Write ``out_dir/<name>.json`` atomically."""
    from curriculum_search.utils.io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(result_path(name, out_dir), json.dumps(data, indent=2, default=_json_default))


def read_result(name: str, out_dir: Path = OUT_DIR) -> dict[str, Any] | None:
    """The last result of a part, or ``None`` when it never ran."""
    path = result_path(name, out_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for noisy in ("choreographer", "kaleido", "logistro"):  # PNG export's browser driver
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_common_args(parser: Any) -> Any:
    """``--size`` and ``--out`` (shared by every part)."""
    parser.add_argument(
        "--size", choices=SIZES, default=DEFAULT_SIZE, help="benchmark size (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="where JSON results and plots go (default: benchmarks/out)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per training process (default: 1 for sizes ci and cpu, where independent "
        "runs go side by side on the cores instead; the library's choice for gpu). Two threads that must "
        "wait for each other on a CPU shared with other work make steps many times slower",
    )
    return parser


def resolve_threads(args: Any) -> int | None:
    """Fill in ``args.threads``' default for ``args.size`` (see :func:`add_common_args`)."""
    if args.threads is None and args.size != "gpu":
        args.threads = 1
    return args.threads


# -- plots -----------------------------------------------------------------------------------------
@dataclass
class Series:
    """One line (or one bar group) of a plot; ``err`` are symmetric error bars."""

    name: str
    x: list[Any]
    y: list[float]
    err: list[float] | None = None
    step: bool = False


@dataclass
class PlotFiles:
    """Files a plot was written to (``png`` is ``None`` when no PNG backend exists; see ``note``)."""

    html: str | None = None
    png: str | None = None
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _plotly_figure(
    kind: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[Series],
    log_x: bool = False,
    hline: float | None = None,
) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in series:
        err = {"type": "data", "array": s.err, "visible": True} if s.err else None
        if kind == "bar":
            fig.add_trace(go.Bar(name=s.name, x=s.x, y=s.y, error_y=err))
        else:
            fig.add_trace(
                go.Scatter(
                    name=s.name,
                    x=s.x,
                    y=s.y,
                    error_y=err,
                    mode="markers" if kind == "scatter" else "lines+markers",
                    line={"shape": "hv"} if s.step else {},
                )
            )
    fig.update_layout(
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        template="plotly_white",
        barmode="group",
        width=900,
        height=500,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        margin={"t": 90},
    )
    if log_x:
        fig.update_xaxes(type="log")
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dash", line_color="black", annotation_text=f"{hline:g}")
    return fig


def _matplotlib_png(
    path: Path,
    kind: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[Series],
    log_x: bool,
    hline: float | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    if kind == "bar":
        cats = list(dict.fromkeys(c for s in series for c in s.x))
        width = 0.8 / max(1, len(series))
        for i, s in enumerate(series):
            xs = [cats.index(c) + (i - (len(series) - 1) / 2) * width for c in s.x]
            ax.bar(xs, s.y, width, yerr=s.err, label=s.name, capsize=3)
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=20, ha="right")
    else:
        for s in series:
            if s.step:
                ax.step(s.x, s.y, where="post", label=s.name, marker="o")
            else:
                ls = "none" if kind == "scatter" else "-"
                ax.errorbar(s.x, s.y, yerr=s.err, label=s.name, marker="o", capsize=3, linestyle=ls)
        if log_x:
            ax.set_xscale("log")
    if hline is not None:
        ax.axhline(hline, color="black", linestyle="--")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_plot(
    name: str,
    kind: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[Series],
    out_dir: Path = OUT_DIR,
    *,
    log_x: bool = False,
    hline: float | None = None,
) -> PlotFiles:
    """Write ``out_dir/<name>.html`` (plotly) and ``<name>.png`` (plotly + kaleido, else matplotlib).

    The HTML loads plotly.js from its CDN (small files); the PNG is the offline view. When neither
    kaleido nor matplotlib is installed the PNG is skipped and ``note`` says so.

    Args:
        name: file stem.
        kind: ``line``, ``scatter`` (markers only) or ``bar``.
        title / xlabel / ylabel: labels.
        series: the data.
        out_dir: target folder.
        log_x: logarithmic x axis (line plots).
        hline: a dashed horizontal reference line at this y (e.g. a goal).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = PlotFiles()
    try:
        fig = _plotly_figure(kind, title, xlabel, ylabel, series, log_x, hline)
    except ImportError:
        fig = None
        files.note = "plotly is not installed"
    if fig is not None:
        html = out_dir / f"{name}.html"
        fig.write_html(html, include_plotlyjs="cdn", full_html=True)
        files.html = str(html)
    png = out_dir / f"{name}.png"
    errors = []
    if fig is not None:
        try:
            fig.write_image(png, scale=1)
            files.png = str(png)
        except Exception as exc:  # kaleido missing, or it cannot start a browser
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            errors.append(f"plotly/kaleido: {first[:120]}")
    if files.png is None:
        try:
            _matplotlib_png(png, kind, title, xlabel, ylabel, series, log_x, hline)
            files.png = str(png)
        except ImportError:
            errors.append("matplotlib is not installed")
    if files.png is None:
        files.note = "no PNG: " + "; ".join(errors)
        log.warning("plot %s: %s", name, files.note)
    return files


# -- benchmark spaces ------------------------------------------------------------------------------
def _scale_ci(raw: dict[str, Any]) -> dict[str, Any]:
    """The ``ci`` size of a task space: 64 px, tens of iterations, a handful of trials."""
    raw = json.loads(json.dumps(raw))
    size = 64
    data = raw.setdefault("data", {})
    syn = data.setdefault("synthetic", {})
    syn.update(num_train=48, num_val=16, image_size=size)
    data["image_size"] = size
    raw["student"]["image_size"] = size
    for entry in raw.get("teachers", {}).values():
        if "zoo" in entry:
            entry["zoo"]["iterations"] = 40
            entry["zoo"]["spec"]["image_size"] = size
    raw["proxy"] = {
        "iterations": 24,
        "train_subset": 32,
        "val_subset": 16,
        "image_size": None,
        "eval_every": 8,
        "seeds": 1,
    }
    raw["full"] = {"iterations": 30, "train_subset": None, "val_subset": None, "eval_every": None, "seeds": 1}
    raw["trials"] = 4
    raw.setdefault("train", {}).update(warmup_iterations=4, checkpoint_every=0)
    return raw


def _scale_gpu(raw: dict[str, Any]) -> dict[str, Any]:
    """The ``gpu`` size: 4x the data, iterations and trials of the ``cpu`` size."""
    raw = json.loads(json.dumps(raw))
    syn = raw.setdefault("data", {}).setdefault("synthetic", {})
    syn["num_train"] = int(syn.get("num_train", 600)) * 4
    syn["num_val"] = int(syn.get("num_val", 150)) * 2
    for entry in raw.get("teachers", {}).values():
        if "zoo" in entry:
            entry["zoo"]["iterations"] = int(entry["zoo"]["iterations"]) * 4
    proxy = raw.setdefault("proxy", {})
    proxy["iterations"] = int(proxy.get("iterations", 300)) * 4
    proxy["eval_every"] = int(proxy.get("eval_every", 100)) * 4
    full = raw.setdefault("full", {})
    full["iterations"] = int(full.get("iterations", 1200)) * 4
    if full.get("eval_every"):
        full["eval_every"] = int(full["eval_every"]) * 4
    raw["trials"] = int(raw.get("trials", 20)) * 3
    return raw


def task_space_dict(task: str, size: str) -> tuple[dict[str, Any], Path]:
    """The raw space of benchmark ``task`` (``benchmarks/spaces/<task>.yaml``) scaled to ``size``."""
    from curriculum_search.utils.io import load_yaml

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} (known: {', '.join(SIZES)})")
    path = SPACES_DIR / f"{task}.yaml"
    raw = load_yaml(path)
    if size == "ci":
        raw = _scale_ci(raw)
    elif size == "gpu":
        raw = _scale_gpu(raw)
    return raw, path


def task_space(task: str, size: str, **overrides: Any) -> Any:
    """The validated :class:`~curriculum_search.search.space.SearchSpace` of ``task`` at ``size``.

    ``overrides`` replace top-level blocks of the raw file (e.g. ``sampler={"name": "random"}``)
    before validation.
    """
    from curriculum_search.search.space import make_pruner, make_sampler, space_from_dict

    raw, path = task_space_dict(task, size)
    raw.update(overrides)
    space = space_from_dict(raw, source=path, base_dir=path.parent)
    make_sampler(space, source=path)
    make_pruner(space, source=path)
    return space


def size_dir(size: str, out_dir: Path = OUT_DIR) -> Path:
    """Where the results of ``size`` go (``out_dir/<size>``)."""
    return out_dir / size


def studies_root(size: str, out_dir: Path = OUT_DIR) -> Path:
    """Where the benchmark studies, the zoo and the caches of ``size`` live."""
    return size_dir(size, out_dir) / "studies"


# -- benchmark studies -----------------------------------------------------------------------------
#: Study variants: space overrides and whether the four baselines are enqueued first.
VARIANTS: dict[str, dict[str, Any]] = {
    # the product's default search: TPE + median pruning, baselines first
    "tpe": {"overrides": {}, "baselines": True},
    "tpe_nopruning": {"overrides": {"pruner": {"name": "none"}}, "baselines": True},
    # plain random search: random sampler, no pruning, no baselines
    "random": {"overrides": {"sampler": {"name": "random"}, "pruner": {"name": "none"}}, "baselines": False},
}


@dataclass
class StudyRun:
    """A benchmark study after :func:`ensure_study`."""

    task: str
    variant: str
    name: str
    space: Any
    root: Path
    study: Any
    wall_s: float
    zoo_wall_s: float
    resumed: bool
    pool: list[Any] = field(default_factory=list)
    #: The study's trials as the library's reader gives them (:class:`TrialRecord`).
    trials: tuple[Any, ...] = ()


def variant_space(task: str, size: str, variant: str) -> Any:
    v = VARIANTS[variant]
    space = task_space(task, size, **v["overrides"])
    return dataclasses.replace(space, name=f"{space.name}-{variant}")


def ensure_zoo(
    space: Any, root: Path, source: Path | None = None, threads: int | None = None
) -> tuple[list[Any], float]:
    """Train the missing zoo teachers of ``space`` (and the library's student-alone reference;
    timed, ~0 s when all exist); returns the pool's ``TeacherInfo`` list (reference included)."""
    from curriculum_search.distill.cache import CacheConfig
    from curriculum_search.search.zoo import build_zoo

    t0 = time.perf_counter()
    infos = build_zoo(
        space,
        root,
        cache=CacheConfig(enabled=False),
        threads=threads,
        progress=False,
        source=source,
    )
    return infos, time.perf_counter() - t0


def teacher_cache(root: Path, enabled: bool = True, sub: str = "teachers") -> Any:
    """The teacher-output cache of the benchmark studies (disk under ``root/_cache/<sub>``)."""
    from curriculum_search.distill.cache import CacheConfig

    return CacheConfig(enabled=enabled, root=root / "_cache" / sub if enabled else None)


def ensure_study(
    task: str,
    size: str,
    variant: str,
    *,
    out_dir: Path = OUT_DIR,
    trials: int | None = None,
    workers: int = 1,
    cache: Any = None,
    name: str | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> StudyRun:
    """Run (or resume, or just open) benchmark study ``variant`` of ``task`` with the library's
    :func:`~curriculum_search.search.service.run_search`.

    The zoo is trained first (and timed). A finished study is only reopened, so parts that share a
    study (quality and search_cost) run it once.
    """
    from curriculum_search.search.service import SearchOptions, run_search
    from curriculum_search.search.storage import load_study_readonly, storage_spec

    space = variant_space(task, size, variant)
    root = studies_root(size, out_dir)
    root.mkdir(parents=True, exist_ok=True)
    cache = cache if cache is not None else teacher_cache(root)
    pool, zoo_wall = ensure_zoo(space, root, SPACES_DIR / f"{task}.yaml", threads)
    study_name = name or space.name
    spec = storage_spec(root, study_name, None)
    before = 0
    if spec.sqlite_path is not None and spec.sqlite_path.is_file():
        try:
            before = len(trial_rows(read_trials(root, study_name)))
        except Exception:
            before = 0
    opts = SearchOptions(
        studies_root=root,
        name=study_name,
        trials=trials,
        workers=workers,
        threads=threads,
        cache=cache,
        progress=False,
        space_file=SPACES_DIR / f"{task}.yaml",
        echo=echo or (lambda s: log.info("%s: %s", study_name, s)),
    )
    t0 = time.perf_counter()
    run_search(space, opts, enqueue=VARIANTS[variant]["baselines"])
    wall = time.perf_counter() - t0
    study = load_study_readonly(spec, study_name)
    return StudyRun(
        task,
        variant,
        study_name,
        space,
        root,
        study,
        wall,
        zoo_wall,
        before > 0,
        pool,
        read_trials(root, study_name),
    )


def read_trials(root: Path, name: str, selection: bool = False) -> tuple[Any, ...]:
    """The trials of study ``name`` under ``root`` (``selection``: of its selection study, the race
    runs), read-only through the library's study reader
    (:class:`~curriculum_search.search.reader.TrialRecord`, in number order)."""
    from curriculum_search.search.attrs import selection_study_name
    from curriculum_search.search.reader import StudyReader
    from curriculum_search.search.storage import open_readonly, storage_spec

    spec = storage_spec(root, name, None)
    reader = StudyReader(open_readonly(spec), spec.display)
    try:
        return reader.trials(selection_study_name(name) if selection else name)
    finally:
        reader.close()


def trial_rows(trials: Iterable[Any]) -> list[dict[str, Any]]:
    """Finished (complete or pruned) trials in completion order, with what each cost.

    ``trials`` are the reader's records (:func:`read_trials`, ``StudyRun.trials``); a re-queued
    trial is left out (its retry counts, the reader's count rule). ``iterations`` are the proxy
    iterations the trial actually trained (the pruning step for a pruned trial, 0 for a reused
    result), ``wall_s`` its process wall time.
    """
    rows = []
    for t in trials:
        if t.state not in ("COMPLETE", "PRUNED") or not t.counted:
            continue
        total = int(t.curriculum.get("total_iterations") or 0)
        reused = t.reused_from is not None
        if reused:
            its = 0
        elif t.state == "PRUNED":
            its = int(t.pruned_at or max(t.intermediate_values or {0: 0}))
        else:
            its = total
        rows.append(
            {
                "number": t.number,
                "state": t.state.lower(),
                "value": t.value,
                "baseline": t.baseline,
                "description": t.description,
                "iterations": its,
                "wall_s": 0.0 if reused else float(t.wall_time_s or 0.0),
                "reused": reused,
                "teacher_forwards": t.teacher_forwards,
                "start": t.start.timestamp() if t.start else None,
                "complete": t.complete.timestamp() if t.complete else None,
            }
        )
    rows.sort(key=lambda r: (r["complete"] or 0.0, r["number"]))
    return rows


# -- one curriculum, trained the way the product trains it ---------------------------------------------
def curriculum_run(
    space_file: str | Path,
    studies: str | Path,
    choice: Mapping[str, Any],
    *,
    proxy: bool,
    seed: int,
    out: Path,
    iterations: int | None = None,
) -> tuple[Any, Path]:
    """The recipe of one benchmark run and its folder: ``proxy`` = the search's proxy recipe scored
    on the selection split; else the race's full-length recipe (``iterations``: another length)
    scored on the report split. ``choice`` is a ``CurriculumChoice.as_dict()``."""
    from curriculum_search.api import load_space
    from curriculum_search.search.choice import choice_from_dict
    from curriculum_search.search.recipes import build_recipe

    space = load_space(space_file)
    recipe = build_recipe(
        space,
        choice_from_dict(choice),
        iterations=iterations or (space.proxy if proxy else space.full).iterations,
        proxy=proxy,
        seed=seed,
        studies_root=studies,
        split="selection" if proxy else "report",
    )
    return recipe, out


def finished_ap(recipe: Any, out: Path) -> float | None:
    """AP of a finished run of exactly ``recipe`` in ``out`` (``None``: not run, or another recipe)."""
    from curriculum_search.curriculum.trainer import recipe_hash

    done = out / "metrics.json"
    if not done.is_file():
        return None
    m = json.loads(done.read_text())
    return float(m["ap"]) if m.get("recipe_hash") == recipe_hash(recipe) else None


def train_run(recipe: Any, out: Path, space_file: str | Path, studies: str | Path) -> tuple[float, float]:
    """Train ``recipe`` into ``out`` with one thread and the studies' teacher-output cache (resumes
    from its checkpoint; a finished run is read back): its AP and the wall time spent here."""
    from curriculum_search.curriculum.trainer import RunOptions, run_recipe
    from curriculum_search.distill.cache import CacheConfig

    ap = finished_ap(recipe, out)
    if ap is not None:
        return ap, 0.0
    root = Path(studies)
    t0 = time.perf_counter()
    res = run_recipe(
        recipe,
        RunOptions(
            out_dir=out,
            cache_root=root / "_cache",
            base_dir=root,
            source=str(space_file),
            cache=CacheConfig(root=root / "_cache" / "teachers"),
            progress=False,
            threads=1,
        ),
    )
    return float(res.metrics.ap), time.perf_counter() - t0


def copy_plot(files: PlotFiles, plots_dir: Path = PLOTS_DIR) -> dict[str, str]:
    """Copy a plot's HTML/PNG into ``benchmarks/plots/``; returns their paths relative to
    ``benchmarks/``."""
    import shutil

    plots_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in ("html", "png"):
        src = getattr(files, kind)
        if src and Path(src).is_file():
            dst = plots_dir / Path(src).name
            shutil.copyfile(src, dst)
            out[kind] = str(dst.relative_to(BENCH_DIR))
    return out


# -- GPU sampling (scaling, gpu_smoke) -------------------------------------------------------------
def _smi_gpu(index: int) -> str:
    """``nvidia-smi -i`` id of this process' CUDA device ``index`` (through ``CUDA_VISIBLE_DEVICES``)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if index < len(visible) else str(index)


def _smi_query(fields: str, index: int) -> list[float] | None:
    """Numeric ``nvidia-smi --query-gpu`` fields (comma list) of device ``index`` in one call;
    ``None`` without nvidia-smi or an answer."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", _smi_gpu(index)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        return [float(v) for v in out.splitlines()[0].split(",")] if out else None
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def gpu_sample(index: int = 0, memory: bool = True) -> tuple[float | None, float | None]:
    """``(utilisation %, memory in use MiB)`` of CUDA device ``index``, every process included.

    Utilisation is the share of the last sample period in which a kernel ran; memory counts every
    process' CUDA context and caching-allocator reserve (unlike ``torch.cuda.max_memory_allocated``
    it sees other processes: trials). Asked from NVML (``torch.cuda.utilization`` /
    ``device_memory_used``, needs ``nvidia-ml-py``), else from one ``nvidia-smi`` call; ``None``
    where neither answers (or memory is not asked). Creates no CUDA context.
    """
    import torch

    try:
        util = float(torch.cuda.utilization(index))
        return util, (torch.cuda.device_memory_used(index) / 2**20 if memory else None)
    except Exception:
        vals = _smi_query("utilization.gpu,memory.used" if memory else "utilization.gpu", index)
    if not vals:
        return None, None
    return vals[0], (vals[1] if memory and len(vals) > 1 else None)


def gpu_utilization(index: int = 0) -> float | None:
    """Utilisation of CUDA device ``index`` in % (see :func:`gpu_sample`); ``None`` if unknown."""
    return gpu_sample(index, memory=False)[0]


def gpu_memory_used_mb(index: int = 0) -> float | None:
    """Memory in use on CUDA device ``index`` in MiB (see :func:`gpu_sample`); ``None`` if unknown."""
    return gpu_sample(index)[1]


class GpuSampler:
    """Samples GPU utilisation (``util``, %; ``times``: when, ``time.time()``) and, with
    ``memory=True``, device memory in use (``mem_mb``, MiB) every ``interval`` seconds in a
    background thread while in its ``with`` block."""

    def __init__(self, interval: float = 0.2, index: int = 0, memory: bool = False) -> None:
        import threading

        self.interval = interval
        self.index = index
        self.memory = memory
        self.util: list[float] = []
        self.times: list[float] = []
        self.mem_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            t = time.time()
            u, m = gpu_sample(self.index, self.memory)
            if u is not None:
                self.util.append(u)
                self.times.append(t)
            if m is not None:
                self.mem_mb.append(m)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
