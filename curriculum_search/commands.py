"""CLI command handlers for the search service, the zoo and the dashboard (see ``cli.py``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from curriculum_search.cli import _cache_config, _progress_bars
from curriculum_search.errors import ConfigError, StudyError


def _space(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from curriculum_search.search.space import load_space

    return load_space(args.space)


def _opts(args: argparse.Namespace, space_file: Path | None):  # type: ignore[no-untyped-def]
    from curriculum_search.search.service import SearchOptions

    return SearchOptions(
        studies_root=args.studies_dir,
        name=getattr(args, "name", None),
        storage=getattr(args, "storage", None),
        trials=getattr(args, "trials", None),
        timeout_s=getattr(args, "timeout", None),
        workers=getattr(args, "workers", 1),
        device=args.device,
        threads=args.threads,
        cache=_cache_config(args),
        progress=_progress_bars(args),
        seed=getattr(args, "seed", None),
        space_file=space_file,
    )


def _build_zoo(space, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    from curriculum_search.zoo import build_zoo, format_pool

    infos = build_zoo(
        space,
        args.studies_dir,
        cache=_cache_config(args),
        device=args.device,
        threads=args.threads,
        progress=_progress_bars(args),
        source=args.space,
    )
    print(format_pool(infos))


def cmd_search(args: argparse.Namespace, *, full: bool = False) -> int:
    from curriculum_search.search.service import run_full, run_search

    if args.workers < 1:
        raise ConfigError(None, "--workers", "must be >= 1")
    space = _space(args)
    _build_zoo(space, args)
    opts = _opts(args, args.space)
    summary = run_search(space, opts)
    if summary.best_trial is None:
        raise StudyError(
            f"study {summary.study_name!r}: no trial completed; see studies/{summary.study_name}/trials/*/trial.log"
        )
    print(f"best: trial #{summary.best_trial} AP {summary.best_value:.4f}  {summary.best_description}")
    study_dir = args.studies_dir / summary.study_name
    if full:
        result = run_full(space, opts)
        m = result.metrics
        print(f"full run: AP {m.ap:.4f}  AP50 {m.ap50:.4f}  AP75 {m.ap75:.4f}")
        print(f"student weights: {result.student_path}")
    else:
        from curriculum_search.search.service import export_recipe
        from curriculum_search.utils.io import atomic_write_text

        atomic_write_text(
            study_dir / "best_recipe.yaml", export_recipe(summary.study_name, args.storage, args.studies_dir)
        )
    print(f"recipe: {study_dir / 'best_recipe.yaml'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return cmd_search(args, full=not args.skip_full)


def cmd_worker(args: argparse.Namespace) -> int:
    from curriculum_search.search.service import SearchOptions, open_study, run_search, space_of
    from curriculum_search.search.storage import load_study_readonly, storage_spec

    spec = storage_spec(args.studies_dir, args.study, args.storage)
    space = space_of(load_study_readonly(spec, args.study))
    opts: SearchOptions = _opts(args, None)
    opts.name = args.study
    open_study(space, opts, spec, create=False)
    summary = run_search(space, opts, enqueue=False)
    print(
        f"worker done: study {summary.study_name} has {summary.finished} finished trials; best AP {summary.best_value}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from curriculum_search.search.service import export_recipe
    from curriculum_search.utils.io import atomic_write_text

    text = export_recipe(args.study, args.storage, args.studies_dir, args.trial, proxy=args.proxy)
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from curriculum_search.search.service import format_studies, list_studies

    print(format_studies(list_studies(args.studies_dir, args.storage)))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from curriculum_search.search.service import study_status

    print(study_status(args.name, args.studies_dir, args.storage))
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    _build_zoo(_space(args), args)
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from curriculum_search.zoo import describe_pool, format_pool, student_reference

    space = _space(args)
    infos = describe_pool(space, args.studies_dir)
    ref = student_reference(space, args.studies_dir, train=False)
    print(format_pool([*infos, ref] if ref else infos))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from curriculum_search.dashboard import dashboard_command

    cmd = dashboard_command(args.host, args.port, args.storage, args.studies_dir, open_browser=False)
    print(f"dashboard on http://{args.host}:{args.port}  (Ctrl+C to stop)")
    return subprocess.call(cmd)


HANDLERS = {
    "run": cmd_run,
    "search": cmd_search,
    "worker": cmd_worker,
    "export": cmd_export,
    "studies": cmd_studies,
    "status": cmd_status,
    "zoo_build": cmd_zoo_build,
    "zoo_list": cmd_zoo_list,
    "dashboard": cmd_dashboard,
}
