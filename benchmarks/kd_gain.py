"""What distillation buys on a space's task: the student alone against direct KD from each teacher.

    python -m benchmarks.kd_gain [--space space/default.yaml] [--iterations N] [--seeds 3]

The question a task designer asks before any search: on this data, with this zoo and this
budget, does distilling from a teacher beat the student trained alone, by more than the seed
noise? This benchmark answers it with the product's own protocol:

1. the space's teacher zoo is built (``build_zoo``, cached under ``--studies-dir``; its wall time
   is reported when it had to train);
2. the student alone and direct KD from every teacher (the baseline method settings: MGD × 1 +
   gated response KD, linear decay to 0.1, the space's default learning rate) are trained for
   ``--iterations`` (default: the space's full length) on the same seeds, data order and
   evaluation images (paired seeds), ``--workers`` runs at once with one thread each;
3. each is scored on the report split (the held-out split the final numbers use), and each KD
   arm's paired difference to the student alone is given as mean and ``--confidence`` t interval.

Writes ``<out>/kd_gain.json`` and prints a table. Every run resumes (keyed by arm and seed), so an
interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from joblib import Parallel, delayed  # noqa: E402

STUDENT_ALONE = "student alone"


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    ap: float
    wall_s: float


def _train(space_file: str, studies: str, arm: str, teacher: str | None, seed: int, iterations: int) -> Run:
    """One run (its own process): ``arm`` for ``iterations`` on ``seed``, scored on the report split."""
    from benchmarks.common import curriculum_run, train_run
    from curriculum_search.api import load_space
    from curriculum_search.search.baselines import student_only_choice
    from curriculum_search.search.encoding import choice_from_settings

    space = load_space(space_file)
    choice = (
        student_only_choice(space)
        if teacher is None
        else choice_from_settings(space, {"teachers": [teacher]})
    )
    out = Path(studies) / "_kd_gain" / f"{arm.replace(' ', '_')}-i{iterations}-s{seed}"
    recipe, out = curriculum_run(
        space_file, studies, choice.as_dict(), proxy=False, seed=seed, out=out, iterations=iterations
    )
    ap, wall = train_run(recipe, out, space_file, studies)
    return Run(arm, seed, ap, wall)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--space", default=str(ROOT / "space" / "default.yaml"), help="space file (default: the default)"
    )
    p.add_argument(
        "--iterations", type=int, default=None, help="iterations per run (default: the space's full)"
    )
    p.add_argument("--seeds", type=int, default=3, help="paired seeds per arm (default 3)")
    p.add_argument("--workers", type=int, default=2, help="runs at once, one thread each (default 2)")
    p.add_argument("--confidence", type=float, default=0.9, help="two-sided t interval level (default 0.9)")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "out" / "kd_gain",
        help="folder for studies/ (zoo, cache, runs) and kd_gain.json (default benchmarks/out/kd_gain)",
    )
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from curriculum_search.api import build_zoo, load_space
    from curriculum_search.search.race import paired_stats

    space = load_space(a.space)
    studies = a.out / "studies"
    iterations = a.iterations or space.full.iterations
    t0 = time.time()
    infos = build_zoo(a.space, studies, threads=a.workers, progress=False)
    zoo_s = time.time() - t0
    teachers = [i.name for i in infos if i.name in space.teachers]
    print(f"zoo ready in {zoo_s:.0f} s (0 when cached)")
    for i in infos:
        print(f"  {i.name:<16} {i.label:<40} AP {i.ap:.3f}  (selection split)")
    arms: list[tuple[str, str | None]] = [(STUDENT_ALONE, None)] + [(f"direct KD {t}", t) for t in teachers]
    jobs = [(arm, t, s) for s in range(a.seeds) for arm, t in arms]
    t1 = time.time()
    runs: list[Run] = Parallel(n_jobs=a.workers)(
        delayed(_train)(a.space, str(studies), arm, t, s, iterations) for arm, t, s in jobs
    )
    runs_s = time.time() - t1
    by_arm: dict[str, list[float]] = {}
    for r in sorted(runs, key=lambda r: (r.arm, r.seed)):
        by_arm.setdefault(r.arm, []).append(r.ap)
    base = by_arm[STUDENT_ALONE]
    rows: list[dict[str, Any]] = []
    print(
        f"\n{iterations} iterations, seeds 0..{a.seeds - 1}, AP on the report split ({runs_s:.0f} s of runs)"
    )
    for arm, _ in arms:
        vals = by_arm[arm]
        st = paired_stats(vals, base, a.confidence) if arm != STUDENT_ALONE else None
        wall = sum(r.wall_s for r in runs if r.arm == arm) / a.seeds
        delta = ""
        if st is not None:
            iv = f"[{st.lo:+.3f}, {st.hi:+.3f}]" if st.lo is not None and st.hi is not None else "[n/a]"
            delta = f"  {st.words()} the student alone: {st.mean:+.3f} {iv}"
        print(
            f"  {arm:<22} " + " ".join(f"{v:.3f}" for v in vals) + f"  mean {sum(vals) / len(vals):.3f}"
            f"  {wall:5.0f} s/run{delta}"
        )
        rows.append(
            {
                "arm": arm,
                "ap": vals,
                "wall_s": wall,
                "delta_mean": st.mean if st else None,
                "delta_interval": [st.lo, st.hi] if st and st.lo is not None else None,
            }
        )
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "kd_gain.json").write_text(
        json.dumps(
            {
                "space": str(a.space),
                "iterations": iterations,
                "seeds": a.seeds,
                "confidence": a.confidence,
                "zoo_s": zoo_s,
                "runs_s": runs_s,
                "teachers": [{"name": i.name, "label": i.label, "ap": i.ap} for i in infos],
                "arms": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
