"""Evidence at a scale where differences are resolvable (issue 16): proxy fidelity, and the whole
pipeline's pick against every baseline, on paired seeds, scored on the held-out report split.

    python -m benchmarks.evidence                          # the two tasks with signal -> benchmarks/results.json
    python -m benchmarks.evidence --tasks retina_shapes64  # rerun one task (the others are kept)
    python -m benchmarks.evidence --report                 # only rewrite RESULTS.md from results.json

For each task (a space file: ``pvt_retina64`` and ``retina_shapes64`` are in ``benchmarks/spaces/``,
``default`` is the embedded default ``space/default.yaml``, run only when named; ``--space FILE``
adds any):

1. **Zoo.** The space's teachers are trained once (``build_zoo``), their AP measured.
2. **The pipeline, repeated.** ``--reps`` times (default 3) the product's main job exactly as a
   user runs it (``curriculum_search.api.run``: search → selection race → shipped student), each
   repeat with its own seed ``r`` (``run --seed r``: other sampler draws, other proxy seeds, race
   seeds ``r .. r+2``) in its own study ``<task>-pipeline-s<r>``. The pick is the race's winner;
   its held-out AP per race seed is what the race recorded on the report split.
3. **Random search at equal compute.** For each repeat, random sampling (no pruning, no baselines,
   seed ``r``) with as many proxy trials as the repeat's search + selection trained iterations
   allow, less one full run (the one that ships); its best proxy trial is trained at full length
   on the repeat's race seeds.
4. **Full-length runs of the baselines** (student alone, direct KD from the strongest teacher,
   weak→strong, the adaptation-cost heuristic order, as the study enqueued them) on every seed any
   repeat raced, with the same recipe the race trains (all training images but the selection
   carve-out), scored on the report split: the pick is compared with each of them on the very seeds
   its race used (paired seeds: same seeds, data order and evaluation images). Every race trains
   every distinct distilling baseline at full length on its seeds, so these runs, and any other
   full run of step 5 a race already made, are read from the races instead of trained again
   (:func:`race_runs`); the student alone is trained again, and the *pairing check* compares it
   with the race's run of the same recipe.
5. **Proxy fidelity.** At least ``--curricula`` (default 12) distinct curricula — the baselines,
   the picks, random ones and searched ones — each trained at the proxy budget (scored on the
   selection split's proxy subset, as the search sees it) and at full length (report split) on
   seeds ``0 .. --seeds-1``: Kendall τ_b and Spearman ρ with bootstrap intervals, the noise
   ceiling, P(proxy's best is the full-length best), the regret of the proxy's pick
   (:mod:`benchmarks.evidence_stats`).

Runs go to ``--workers`` processes at once (one thread each). Everything resumes: studies, race
runs and benchmark runs (``<out>/studies/_evidence/<curriculum>-<phase>-s<seed>/``) are reused, so
an interrupted benchmark continues where it stopped. ``benchmarks/results.json`` is rewritten after
every task and ``benchmarks/RESULTS.md`` (with its plots) is generated from it
(:mod:`benchmarks.evidence_report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    BENCH_DIR,
    OUT_DIR,
    SPACES_DIR,
    curriculum_run,
    finished_ap,
    machine_info,
    machine_line,
    train_run,
)
from benchmarks.evidence_stats import across_repeats, fidelity, goals, paired  # noqa: E402

log = logging.getLogger("benchmarks.evidence")

#: The benchmark tasks: name -> space file.
TASKS: dict[str, Path] = {
    "pvt_retina64": SPACES_DIR / "pvt_retina64.yaml",
    "retina_shapes64": SPACES_DIR / "retina_shapes64.yaml",
    "default": ROOT / "space" / "default.yaml",
}
#: The tasks a call without ``--tasks`` runs: the two with signal (the 90-minute budget). The
#: embedded default (``--tasks default``, about 45 min more) has a KD gain of only 2-3 paired sd.
DEFAULT_TASKS = ("pvt_retina64", "retina_shapes64")
#: How each task was designed and its budgets chosen (stored with its results).
TASK_DESIGN: dict[str, str] = {
    "pvt_retina64": (
        "The large-capacity-gap task with a transformer teacher: a RetinaNet MobileNetV3-small-0.5 "
        "student (0.3 M parameters) against a ResNet18 (11.7 M) and the intermediate PVT-v2-b0 "
        "transformer (3.9 M), 64 px, five shape classes, 1-4 objects at 15-45% of the side (other data "
        "than the other tasks; other head and resolution than the default). Budgets are the default's "
        "(student 400 iterations, teachers 700 / 900 at their own learning rates, paid once). How it was "
        "chosen: the embedded default's KD gain was only 2-3 paired sd (its FCOS student's seed sd is "
        "0.008 AP at 96 px), so this task was designed for signal, in two checks with `python -m "
        "benchmarks.kd_gain --seeds 4` and nothing tuned afterwards: first an FCOS version at 64 px (the "
        "student alone 0.032-0.056 AP over seeds, and direct KD from ResNet18 with MGD x1 collapsed to "
        "AP 0 on one seed, its feature loss ~3000x the detection loss), then this RetinaNet version: "
        "student alone 0.013, direct KD from ResNet18 +0.024 [+0.018, +0.029] (about 5 paired sd), from "
        "PVT-v2-b0 +0.017 [+0.010, +0.023]."
    ),
    "default": (
        "The embedded default (`space/default.yaml`), the task with the large capacity gap and the "
        "transformer teacher: 96 px shapes, 4 classes, objects 15-50% of the side; an FCOS "
        "MobileNetV3-small-0.5 student (0.3 M parameters) against a ResNet18 (11.7 M) and a PVT-v2-b0 "
        "transformer (3.9 M, the weaker one: the intermediate teacher of a weak-to-strong curriculum, as "
        "in MTPD). Budgets: the student's full length 400 iterations, the teachers 700 / 900 (paid once, "
        "like pretrained teachers), lr fixed at 3e-3 (good for the student alone at this budget); chosen "
        "in two design runs (issue 17) so the student learns within a few hundred iterations while a "
        "teacher still has something to teach, not tuned to a seed."
    ),
    "retina_shapes64": (
        "A second task unlike the default in data (6 classes, objects 20-55% of a 64 px side), "
        "resolution (64 px) and detector head (RetinaNet: anchors and focal loss), with two CNN teachers, "
        "ResNet18 and the intermediate ResNet10-T. Budgets copied from the default's proportions (student "
        "400 iterations, teachers 700 / 500) and checked once with `python -m benchmarks.kd_gain` before "
        "this benchmark (direct KD from ResNet18 +0.034 [+0.020, +0.048] AP over the student alone, "
        "from ResNet10-T +0.015 [+0.012, +0.019], 3 paired seeds); nothing was tuned afterwards."
    ),
}
RESULTS_JSON = BENCH_DIR / "results.json"
BASELINE_ORDER = ("student_only", "direct_strongest", "weak_to_strong", "heuristic")


@dataclass(frozen=True)
class Settings:
    """How much evidence to gather per task."""

    reps: int = 3
    seeds: int = 3
    curricula: int = 12
    workers: int = 2
    confidence: float = 0.9


@dataclass(frozen=True)
class Curriculum:
    """One curriculum of a task: its key, what it is and how to rebuild it."""

    key: str
    kind: str  # baseline | pick | random_pick | searched | random
    label: str
    choice: dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One benchmark run: a curriculum at one phase (``proxy`` or ``full``) and seed."""

    key: str
    phase: str
    seed: int


# -- runs ------------------------------------------------------------------------------------------
def _recipe(space_file: str, studies: str, choice: dict[str, Any], phase: str, seed: int) -> tuple[Any, Path]:
    from curriculum_search.search.choice import choice_from_dict

    key = choice_from_dict(choice).key
    out = Path(studies) / "_evidence" / f"{key}-{phase}-s{seed}"
    return curriculum_run(space_file, studies, choice, proxy=phase == "proxy", seed=seed, out=out)


def train_one(space_file: str, studies: str, choice: dict[str, Any], phase: str, seed: int) -> dict[str, Any]:
    """One run in its own process (resumes from its checkpoint; a finished run is read back):
    ``proxy`` = the search's proxy recipe scored on the selection split, ``full`` = the race's
    full-length recipe scored on the report split."""
    recipe, out = _recipe(space_file, studies, choice, phase, seed)
    ap, wall = train_run(recipe, out, space_file, studies)
    key = out.name.rsplit(f"-{phase}-", 1)[0]
    return {"key": key, "phase": phase, "seed": seed, "ap": ap, "wall_s": round(wall, 1)}


def run_jobs(
    space_file: Path,
    studies: Path,
    curricula: dict[str, Curriculum],
    jobs: Iterable[Job],
    workers: int,
    done: Callable[[dict[str, Any]], None],
    raced: Mapping[tuple[str, int], float] | None = None,
) -> float:
    """Train ``jobs`` (full runs first: the longest) on ``workers`` processes; ``done`` per run
    (finished runs are read back here, without a worker; a full run in ``raced``, by curriculum
    key and seed, is the race's run of that recipe and is not trained again)."""
    from joblib import Parallel, delayed

    todo = []
    for j in sorted(set(jobs), key=lambda j: (j.phase != "full", j.seed, j.key)):
        if j.phase == "full" and raced and (j.key, j.seed) in raced:
            done(
                {"key": j.key, "phase": j.phase, "seed": j.seed, "ap": raced[(j.key, j.seed)], "wall_s": 0.0}
            )
            continue
        recipe, out = _recipe(str(space_file), str(studies), curricula[j.key].choice, j.phase, j.seed)
        ap = finished_ap(recipe, out)
        if ap is None:
            todo.append(j)
        else:
            done({"key": j.key, "phase": j.phase, "seed": j.seed, "ap": ap, "wall_s": 0.0})
    t0 = time.perf_counter()
    if todo:
        log.info("%d runs on %d workers", len(todo), workers)
        runs = Parallel(n_jobs=min(workers, len(todo)), return_as="generator_unordered")(
            delayed(train_one)(str(space_file), str(studies), curricula[j.key].choice, j.phase, j.seed)
            for j in todo
        )
        for i, r in enumerate(runs, 1):
            done(r)
            if i % 10 == 0 or i == len(todo):
                log.info("  %d/%d runs done (%.0f s)", i, len(todo), time.perf_counter() - t0)
    return time.perf_counter() - t0


# -- studies ---------------------------------------------------------------------------------------
def _trial_iterations(root: Path, name: str) -> tuple[int, float]:
    """Student iterations a study's trials actually trained (pruned: to the pruning step; reused
    results: 0) and their summed process wall time."""
    from benchmarks.common import read_trials, trial_rows

    rows = trial_rows(read_trials(root, name))
    return sum(r["iterations"] for r in rows), sum(r["wall_s"] for r in rows)


def _race_iterations(root: Path, name: str) -> tuple[int, float]:
    from benchmarks.common import read_trials

    its, wall = 0, 0.0
    for t in read_trials(root, name, selection=True):
        if t.state == "COMPLETE" and t.iterations:
            its += int(t.iterations)
            wall += float(t.wall_time_s or 0.0)
    return its, wall


def race_runs(
    root: Path, names: Iterable[str], iterations: int, skip: Iterable[str] = ()
) -> dict[tuple[str, int], float]:
    """Report-split AP of the full-length race runs of studies ``names``, by (curriculum key, seed).

    A race run trains the very recipe of a benchmark ``full`` run (all training images but the
    selection carve-out, the same seed) and scores the report split too, so the benchmark reuses
    it instead of training it again (a curriculum raced by several repeats on one seed: the first
    repeat's run). Curricula in ``skip`` are left out: the student alone is trained again so that
    the pairing check compares two independent runs of one recipe.
    """
    from benchmarks.common import read_trials
    from curriculum_search.search.choice import choice_from_dict

    left_out = set(skip)
    out: dict[tuple[str, int], float] = {}
    for name in names:
        for t in read_trials(root, name, selection=True):
            if t.state != "COMPLETE" or t.iterations != iterations or t.report_ap is None:
                continue
            if not t.curriculum or t.seed is None:
                continue
            key = choice_from_dict(dict(t.curriculum)).key
            if key not in left_out:
                out.setdefault((key, int(t.seed)), float(t.report_ap))
    return out


def _baselines(root: Path, name: str) -> dict[str, Curriculum]:
    """The study's enqueued baselines (name -> curriculum; identical curricula share a key)."""
    from benchmarks.common import read_trials

    out: dict[str, Curriculum] = {}
    for t in read_trials(root, name):
        if t.baseline in BASELINE_ORDER and t.curriculum and t.curriculum_key and t.baseline not in out:
            out[t.baseline] = Curriculum(t.curriculum_key, "baseline", t.baseline, dict(t.curriculum))
    return out


def _study_curricula(root: Path, name: str, kind: str) -> list[Curriculum]:
    """Every non-baseline curriculum a study tried, in trial order."""
    from benchmarks.common import read_trials

    return [
        Curriculum(t.curriculum_key, kind, f"{kind} #{t.number}", dict(t.curriculum))
        for t in read_trials(root, name)
        if t.curriculum and t.curriculum_key and not t.baseline and t.state in ("COMPLETE", "PRUNED")
    ]


def _random_space(space_file: Path) -> Any:
    """The task's space with random sampling and no pruning (relative paths still resolve against
    the task file's folder)."""
    from curriculum_search.search.space import space_from_dict
    from curriculum_search.utils.io import load_yaml

    raw = load_yaml(space_file)
    raw.update(name=f"{raw['name']}-random", sampler={"name": "random"}, pruner={"name": "none"})
    return space_from_dict(raw, source=space_file, base_dir=space_file.parent)


def run_pipeline(space_file: Path, root: Path, name: str, seed: int, workers: int) -> dict[str, Any]:
    """The product's main job (zoo → search → selection → ship) as a user runs it, resumed if
    started before; returns the decision, the pick's held-out values and what it cost."""
    import curriculum_search as cs
    from curriculum_search.search.race_report import load_decision
    from curriculum_search.search.storage import storage_spec

    t0 = time.perf_counter()
    cs.run(
        space_file,
        studies_dir=root,
        name=name,
        seed=seed,
        workers=workers,
        threads=1,
        progress=False,
        echo=lambda s: log.info("%s: %s", name, s),
    )
    wall = time.perf_counter() - t0
    decision = load_decision(storage_spec(root, name, None), name)
    if decision is None:
        raise RuntimeError(f"{name}: the run finished without a selection decision")
    sel, final = decision["selection"], decision["final"]
    search_its, search_wall = _trial_iterations(root, name)
    race_its, race_wall = _race_iterations(root, name)
    race_seeds = next(r["seeds"] for r in sel["rungs"] if r["iterations"] == sel["budget_iterations"])
    return {
        "study": name,
        "seed": seed,
        "wall_s": round(wall, 1),
        "winner": sel["winner"],
        "winner_key": sel["winner_key"],
        "winner_is_baseline": sel["winner_is_baseline"],
        "winner_description": sel["winner_description"],
        "winner_curriculum": sel["winner_curriculum"],
        "best_baseline_by_proxy": sel["best_baseline"],
        "race_delta_selection_split": {"mean": sel["delta_ap_mean"], "interval": sel["delta_ap_interval"]},
        "race_seeds": list(race_seeds),
        "pick_report_ap": final.get("ap_per_seed"),
        "race_student_alone_report_ap": final.get("student_alone_ap_per_seed"),
        "search_iterations": search_its,
        "search_process_s": round(search_wall, 1),
        "race_iterations": race_its,
        "race_process_s": round(race_wall, 1),
    }


def run_random_arm(
    space_file: Path, root: Path, task: str, seed: int, budget_iterations: int, workers: int
) -> dict[str, Any]:
    """Random search spending ``budget_iterations`` proxy iterations; its best proxy trial."""
    from curriculum_search.api import options as make_options
    from curriculum_search.search.coordinator import run_search
    from curriculum_search.search.results import best_trial
    from curriculum_search.search.storage import load_study_readonly, storage_spec

    space = _random_space(space_file)
    per_trial = space.proxy.iterations * space.proxy.seeds
    trials = max(2, round(budget_iterations / per_trial))
    name = f"{task}-random-s{seed}"
    t0 = time.perf_counter()
    opts = make_options(
        root,
        space_file=space_file,
        name=name,
        seed=seed,
        trials=trials,
        workers=workers,
        threads=1,
        progress=False,
        echo=lambda s: log.info("%s: %s", name, s),
    )
    run_search(space, opts, enqueue=False)
    wall = time.perf_counter() - t0
    study = load_study_readonly(storage_spec(root, name, None), name)
    bt = best_trial(study)
    if bt is None:
        raise RuntimeError(f"{name}: no finished trial")
    its, proc = _trial_iterations(root, name)
    from curriculum_search.search import attrs as A

    return {
        "study": name,
        "seed": seed,
        "trials": trials,
        "wall_s": round(wall, 1),
        "iterations": its,
        "process_s": round(proc, 1),
        "pick_trial": bt.number,
        "pick_key": bt.user_attrs[A.CURRICULUM_KEY],
        "pick_description": bt.user_attrs.get(A.DESCRIPTION),
        "pick_curriculum": bt.user_attrs[A.CURRICULUM],
        "pick_proxy_ap": bt.value,
    }


# -- one task --------------------------------------------------------------------------------------
def _values(
    runs: dict[tuple[str, str, int], float], key: str, phase: str, seeds: Iterable[int]
) -> list[float]:
    return [runs[(key, phase, s)] for s in seeds]


def run_task(
    task: str, space_file: Path, out: Path, st: Settings, save: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Everything of one task (see the module docstring); ``save(partial)`` after every step."""
    from curriculum_search.api import load_space
    from curriculum_search.distill.cache import CacheConfig
    from curriculum_search.search.choice import choice_from_dict
    from curriculum_search.search.zoo import build_zoo

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    space = load_space(space_file)
    root = out / "studies"
    t_task = time.perf_counter()
    res: dict[str, Any] = {
        "task": task,
        "space_file": os.path.relpath(space_file, ROOT),
        "settings": dataclasses.asdict(st),
        "design": TASK_DESIGN.get(task, ""),
        "code": code_version(),
        "timings_s": {},
        "complete": False,
        "space": {
            "image_size": space.data.image_size,
            "student": space.student.label,
            "proxy_iterations": space.proxy.iterations,
            "full_iterations": space.full.iterations,
            "trials": space.trials,
            "race_seeds": list(space.selection.seeds),
        },
    }
    # 1. zoo
    t0 = time.perf_counter()
    infos = build_zoo(
        space,
        root,
        cache=CacheConfig(root=root / "_cache" / "teachers"),
        threads=1,
        progress=False,
        source=space_file,
        reference=False,
    )
    res["timings_s"]["zoo"] = round(time.perf_counter() - t0, 1)
    res["teachers"] = [
        {"name": i.name, "label": i.label, "ap_selection_split": i.ap, "params": i.params, "gflops": i.gflops}
        for i in infos
        if i.kind != "reference"
    ]
    save(res)
    # 2. the pipeline, repeated
    t0 = time.perf_counter()
    pipes = []
    for r in range(st.reps):
        log.info("%s: pipeline %d/%d (seed %d)", task, r + 1, st.reps, r)
        pipes.append(run_pipeline(space_file, root, f"{task}-pipeline-s{r}", r, st.workers))
        res["pipelines"] = pipes
        save(res)
    res["timings_s"]["pipelines"] = round(time.perf_counter() - t0, 1)
    full_its = space.full.iterations
    # 3. random search at equal compute
    t0 = time.perf_counter()
    rnds = []
    for p in pipes:
        budget = p["search_iterations"] + p["race_iterations"] - full_its
        log.info("%s: random search, seed %d, %d proxy iterations", task, p["seed"], budget)
        rnds.append(run_random_arm(space_file, root, task, p["seed"], budget, st.workers))
        res["random_search"] = rnds
        save(res)
    res["timings_s"]["random_search"] = round(time.perf_counter() - t0, 1)
    # 4-5. curricula and runs
    base = _baselines(root, pipes[0]["study"])
    cur: dict[str, Curriculum] = {}
    for b in BASELINE_ORDER:
        if b in base:
            cur.setdefault(base[b].key, base[b])
    for p in pipes:
        c = Curriculum(p["winner_key"], "pick", f"pick s{p['seed']}", p["winner_curriculum"])
        cur.setdefault(c.key, c)
    for a in rnds:
        c = Curriculum(a["pick_key"], "random_pick", f"random-search pick s{a['seed']}", a["pick_curriculum"])
        cur.setdefault(c.key, c)
    fillers = [_study_curricula(root, p["study"], "searched") for p in pipes] + [
        _study_curricula(root, a["study"], "random") for a in rnds
    ]
    i = 0
    while len(cur) < st.curricula and any(fillers):
        pool = fillers[i % len(fillers)]
        i += 1
        while pool:
            c = pool.pop(0)
            if c.key not in cur:
                cur[c.key] = c
                break
    for c in cur.values():  # rebuildable (fails here, not in a worker)
        choice_from_dict(c.choice)
    fid_seeds = list(range(st.seeds))
    jobs = {Job(k, ph, s) for k in cur for ph in ("proxy", "full") for s in fid_seeds}
    rep_seeds = sorted({s for p in pipes for s in p["race_seeds"]})
    jobs |= {Job(b.key, "full", s) for b in base.values() for s in rep_seeds}
    jobs |= {Job(a["pick_key"], "full", s) for a, p in zip(rnds, pipes, strict=True) for s in p["race_seeds"]}
    runs: dict[tuple[str, str, int], float] = {}
    walls: list[float] = []
    res["curricula"] = {
        k: {"kind": c.kind, "label": c.label, "description": choice_from_dict(c.choice).describe()}
        for k, c in cur.items()
    }
    res["baselines"] = {b: base[b].key for b in BASELINE_ORDER if b in base}

    def done(r: dict[str, Any]) -> None:
        runs[(r["key"], r["phase"], r["seed"])] = r["ap"]
        walls.append(r["wall_s"])
        res["runs"] = [{"key": k, "phase": ph, "seed": s, "ap": v} for (k, ph, s), v in sorted(runs.items())]
        save(res)

    alone = [base["student_only"].key] if "student_only" in base else []
    raced = race_runs(root, [p["study"] for p in pipes], full_its, skip=alone)
    res["runs_reused_from_races"] = sum(j.phase == "full" and (j.key, j.seed) in raced for j in jobs)
    res["timings_s"]["runs"] = round(run_jobs(space_file, root, cur, jobs, st.workers, done, raced), 1)
    res["runs_process_s"] = round(sum(walls), 1)
    # 6. statistics
    res.update(task_stats(space, cur, base, pipes, rnds, runs, fid_seeds, st))
    res["timings_s"]["total"] = round(time.perf_counter() - t_task, 1)
    res["headline"] = headline(res)
    res["complete"] = True
    save(res)
    return res


def task_stats(
    space: Any,
    cur: dict[str, Curriculum],
    base: dict[str, Curriculum],
    pipes: list[dict[str, Any]],
    rnds: list[dict[str, Any]],
    runs: dict[tuple[str, str, int], float],
    fid_seeds: list[int],
    st: Settings,
) -> dict[str, Any]:
    """The task's headline figures from its runs (pure: used again by ``--report``)."""
    from curriculum_search.search.race import pooled_seed_std

    conf = st.confidence
    keys = list(cur)
    proxy = [_values(runs, k, "proxy", fid_seeds) for k in keys]
    full = [_values(runs, k, "full", fid_seeds) for k in keys]
    fid = fidelity(proxy, full, conf)
    fid["curricula"] = [
        {
            "key": k,
            "kind": cur[k].kind,
            "label": cur[k].label,
            "proxy_ap": p,
            "full_ap": f,
            "proxy_mean": sum(p) / len(p),
            "full_mean": sum(f) / len(f),
        }
        for k, p, f in zip(keys, proxy, full, strict=True)
    ]
    fid["proxy_pick_key"] = keys[fid.pop("proxy_pick")]
    fid["full_best_key"] = keys[fid.pop("full_best")]
    rep_seeds = sorted({s for p in pipes for s in p["race_seeds"]})
    b_vals = {b: _values(runs, c.key, "full", rep_seeds) for b, c in base.items()}
    b_mean = {b: sum(v) / len(v) for b, v in b_vals.items()}
    best = max(b_mean, key=lambda b: b_mean[b])
    seed_std = pooled_seed_std({k: v for k, v in zip(keys, full, strict=True)})
    per_rep = []
    for p, a in zip(pipes, rnds, strict=True):
        seeds = p["race_seeds"]
        pick = p["pick_report_ap"]
        rnd = _values(runs, a["pick_key"], "full", seeds)
        row: dict[str, Any] = {
            "seed": p["seed"],
            "seeds": seeds,
            "winner": p["winner"],
            "winner_description": p["winner_description"],
            "pick_ap": pick,
            "random_pick_ap": rnd,
            "vs": {b: paired(pick, _values(runs, base[b].key, "full", seeds), conf) for b in base},
            "random_vs_best_baseline": paired(rnd, _values(runs, base[best].key, "full", seeds), conf),
            "pick_vs_random": paired(pick, rnd, conf),
            "compute_full_runs": (p["search_iterations"] + p["race_iterations"]) / space.full.iterations,
            "random_compute_full_runs": (a["iterations"] + space.full.iterations) / space.full.iterations,
        }
        row["vs_best_baseline"] = row["vs"][best]
        row["harm"] = (
            row["vs_best_baseline"]["interval"] is not None and row["vs_best_baseline"]["interval"][1] < 0
        )
        alone = p.get("race_student_alone_report_ap")
        if alone and "student_only" in base:
            mine = _values(runs, base["student_only"].key, "full", seeds)
            row["pairing_check_max_abs_diff"] = max(abs(x - y) for x, y in zip(alone, mine, strict=True))
        per_rep.append(row)

    def over_reps(field: str) -> dict[str, Any]:
        return across_repeats([r[field]["mean"] for r in per_rep], conf)

    pipeline = {
        "best_baseline": best,
        "per_repeat": per_rep,
        "vs_best_baseline": over_reps("vs_best_baseline"),
        "vs_baseline": {b: across_repeats([r["vs"][b]["mean"] for r in per_rep], conf) for b in base},
        "random_vs_best_baseline": over_reps("random_vs_best_baseline"),
        "pick_vs_random": over_reps("pick_vs_random"),
        "harm_rate": sum(r["harm"] for r in per_rep) / len(per_rep),
        "pick_ap_mean": sum(sum(r["pick_ap"]) / len(r["pick_ap"]) for r in per_rep) / len(per_rep),
        "random_pick_ap_mean": sum(sum(r["random_pick_ap"]) / len(r["random_pick_ap"]) for r in per_rep)
        / len(per_rep),
        "compute_full_runs_mean": sum(r["compute_full_runs"] for r in per_rep) / len(per_rep),
    }
    alone = b_vals.get("student_only")
    kd_gain = {}
    if alone:
        for b, v in b_vals.items():
            if b == "student_only":
                continue
            d = paired(v, alone, conf)
            d["ratio_mean_to_sd"] = d["mean"] / d["sd"] if d["sd"] else None
            kd_gain[b] = d
    return {
        "fidelity": fid,
        "baseline_ap": {
            b: {"per_seed": dict(zip(map(str, rep_seeds), v, strict=True)), "mean": b_mean[b]}
            for b, v in b_vals.items()
        },
        "seed_std": seed_std,
        "kd_gain_over_student_alone": kd_gain,
        "pipeline": pipeline,
    }


def headline(tr: dict[str, Any]) -> dict[str, Any]:
    """The task's figures a reader wants first, from its full record (also for older records)."""
    pipe, fid = tr["pipeline"], tr["fidelity"]
    base = tr["baseline_ap"]
    # the largest gain distillation showed: the best curriculum at full length vs the student alone
    curs = {c["key"]: c for c in fid["curricula"]}
    alone = curs.get(tr["baselines"].get("student_only", ""))
    best = max(fid["curricula"], key=lambda c: c["full_mean"])
    best_gain = None
    if alone is not None and best is not alone:
        best_gain = paired(best["full_ap"], alone["full_ap"], tr["settings"]["confidence"])
        best_gain["ratio_mean_to_sd"] = best_gain["mean"] / best_gain["sd"] if best_gain["sd"] else None
        best_gain["curriculum"] = tr["curricula"][best["key"]]["description"]
    return {
        "teachers_ap_selection_split": {t["name"]: t["ap_selection_split"] for t in tr.get("teachers", [])},
        "student_alone_ap": base.get("student_only", {}).get("mean"),
        "baseline_ap": {b: v["mean"] for b, v in base.items()},
        "random_search_equal_compute_ap": pipe["random_pick_ap_mean"],
        "pick_ap": pipe["pick_ap_mean"],
        "best_baseline": pipe["best_baseline"],
        "pick_minus_best_baseline": {
            k: pipe["vs_best_baseline"][k] for k in ("mean", "interval", "n", "words")
        },
        "pick_minus_random_search": {
            k: pipe["pick_vs_random"][k] for k in ("mean", "interval", "n", "words")
        },
        "harm_rate": pipe["harm_rate"],
        "seed_std": tr.get("seed_std"),
        "kendall_tau_b": fid["kendall_tau_b"],
        "kendall_tau_b_interval": fid["kendall_tau_b_interval"],
        "noise_ceiling_tau_b": fid["noise_ceiling_tau_b"],
        "p_proxy_best_is_full_best": fid["p_best"],
        "proxy_pick_regret": fid["regret"],
        "compute_full_runs_per_pipeline": pipe["compute_full_runs_mean"],
        "kd_gain_mean_to_sd": {
            b: d.get("ratio_mean_to_sd") for b, d in tr.get("kd_gain_over_student_alone", {}).items()
        },
        "best_curriculum_vs_student_alone": best_gain,
        "wall_s": tr.get("timings_s", {}).get("total"),
    }


# -- the whole benchmark ---------------------------------------------------------------------------
def code_version() -> str:
    """The commit the benchmark ran (``+changes`` when its code or task files differed from it)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        # the code and the task files, not what this benchmark writes (results.json, RESULTS.md, plots)
        paths = ("curriculum_search", "space", "*.py", "*.yaml")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def goal_tasks(results: dict[str, Any]) -> dict[str, Any]:
    """The tasks the goals are judged on: finished, and measured with the current product (a task
    whose record carries ``stale`` — the reason — was measured before a change to what it tests)."""
    return {k: v for k, v in results.get("tasks", {}).items() if v.get("complete") and not v.get("stale")}


def read_results(path: Path = RESULTS_JSON) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


#: What describes one call of the benchmark: stored in the file (the latest call) and in each task
#: (the call that measured it), so that rerunning one task does not re-describe the others.
CALL_FIELDS = ("command", "machine", "conditions", "wall_s_this_call", "load_average_end")


def call_of(results: Mapping[str, Any]) -> dict[str, Any]:
    """The call fields of a results file (those of the latest call that wrote it)."""
    return {k: results[k] for k in CALL_FIELDS if k in results}


def adopt_call(results: dict[str, Any]) -> bool:
    """Give each task without a ``call`` record one (records written before tasks carried their
    own): the file's call fields, which describe the call that wrote it, or — for a task marked
    stale, measured before a change and so by an earlier call — ``{"earlier": True}``. Whether
    any task needed one."""
    latest = call_of(results)
    missing = [tr for tr in results.get("tasks", {}).values() if "call" not in tr]
    for tr in missing:
        tr["call"] = {"earlier": True} if tr.get("stale") else dict(latest)
    return bool(missing)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.evidence_report import write_report

    st = Settings(args.reps, args.seeds, args.curricula, args.workers, args.confidence)
    tasks = dict(TASKS)
    if args.space:
        p = Path(args.space).resolve()
        tasks = {p.stem: p}
    names = args.tasks.split(",") if args.tasks else list(tasks if args.space else DEFAULT_TASKS)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise SystemExit(f"unknown task {unknown[0]!r} (known: {', '.join(tasks)}; --space FILE adds one)")
    results = read_results(args.results)
    results.setdefault("tasks", {})
    adopt_call(results)  # before this call's fields replace the file's
    t0 = time.perf_counter()
    m = machine_info()
    results.update(
        {
            "part": "evidence",
            "command": "python -m benchmarks.evidence " + " ".join(sys.argv[1:]),
            "machine": m,
            "settings": dataclasses.asdict(st),
        }
    )
    if args.conditions:
        results["conditions"] = args.conditions
    print(f"machine: {machine_line(m)}", flush=True)
    this_call: list[str] = []  # the tasks this call measured (so far)
    for name in names:
        out = Path(args.out) / name

        def save(task_res: dict[str, Any]) -> None:
            results["tasks"][task_res["task"]] = task_res
            if task_res["task"] not in this_call:
                this_call.append(task_res["task"])
            results["wall_s_this_call"] = round(time.perf_counter() - t0, 1)
            results["goals"] = goals(goal_tasks(results))
            results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            call = call_of(results)
            for t in this_call:
                results["tasks"][t]["call"] = call
            _write_json(args.results, results)

        run_task(name, tasks[name], out, st, save)
        write_report(results, args.results.parent)
    return results


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from curriculum_search.utils.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=float) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.evidence",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[2:4]),
    )
    p.add_argument(
        "--tasks",
        default=None,
        help=f"comma list among {', '.join(TASKS)} (default: {', '.join(DEFAULT_TASKS)}, the tasks with signal)",
    )
    p.add_argument("--space", default=None, help="a space file to run as the only task (named by its stem)")
    p.add_argument(
        "--reps", type=int, default=3, help="repeats of the whole pipeline, seeds 0..N-1 (default 3)"
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per curriculum for proxy fidelity (default 3)")
    p.add_argument(
        "--curricula", type=int, default=12, help="distinct curricula for proxy fidelity (default 12)"
    )
    p.add_argument("--workers", type=int, default=2, help="processes at once, one thread each (default 2)")
    p.add_argument("--confidence", type=float, default=0.9, help="two-sided interval level (default 0.9)")
    p.add_argument(
        "--out",
        type=Path,
        default=OUT_DIR / "evidence",
        help="studies and runs (default benchmarks/out/evidence)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS_JSON,
        help="results file; RESULTS.md and plots/ are written next to it (default benchmarks/results.json)",
    )
    p.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from the results file")
    p.add_argument(
        "--conditions",
        default=None,
        help="what else the machine did while this ran (load, other jobs), stored in the results file "
        "and quoted in RESULTS.md (with --report: added to the existing results)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    if args.report:
        from benchmarks.evidence_report import write_report

        results = read_results(args.results)
        if not results:
            print(
                f"{args.results}: no results yet (run python -m benchmarks.evidence first)", file=sys.stderr
            )
            return 2
        changed = adopt_call(results) or bool(args.conditions)
        if args.conditions:  # of the latest call: the file's and its tasks'
            results["conditions"] = args.conditions
            date = (results.get("machine") or {}).get("date")
            for tr in results.get("tasks", {}).values():
                if (tr["call"].get("machine") or {}).get("date") == date:
                    tr["call"]["conditions"] = args.conditions
        for name, tr in results.get("tasks", {}).items():  # fields of records written before them
            if not tr.get("design") and TASK_DESIGN.get(name):
                tr["design"], changed = TASK_DESIGN[name], True
            if tr.get("complete") and ("headline" not in tr or tr["headline"].get("wall_s") is None):
                tr["headline"], changed = headline(tr), True
        new_goals = goals(goal_tasks(results))
        if changed or new_goals != results.get("goals"):
            results["goals"] = new_goals
            _write_json(args.results, results)
        print(write_report(results, args.results.parent))
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["DEFAULT_TASKS", "TASKS", "Settings", "adopt_call", "run", "run_task", "task_stats", "train_one"]
