"""CLI command handlers for the search service, the zoo and the dashboard (see ``cli.py``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from curriculum_search.errors import ConfigError, StudyError


def progress_bars(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal only: redirected to a file they would fill it with redraws."""
    return not args.quiet and sys.stderr.isatty()


def cache_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from curriculum_search.distill.cache import CacheConfig

    return CacheConfig(
        enabled=not args.no_cache,
        root=args.studies_dir / "_cache" / "teachers",
        max_memory_mb=args.cache_memory_mb,
        max_disk_mb=args.cache_disk_mb,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from curriculum_search.curriculum.recipe import load_recipe
    from curriculum_search.curriculum.trainer import RunOptions, run_recipe

    recipe = load_recipe(args.recipe)
    from curriculum_search.models.pretrained import ensure_pretrained, recipe_specs

    ensure_pretrained(recipe_specs(recipe), args.recipe)  # offline: one line before any training
    out = args.out or (args.studies_dir / "runs" / recipe.name)
    if args.restart and (out / "checkpoints" / "last.pt").exists():
        (out / "checkpoints" / "last.pt").unlink()
    options = RunOptions(
        out_dir=out,
        cache_root=args.studies_dir / "_cache",
        base_dir=_recipe_base(args.recipe, args.studies_dir, recipe),
        source=args.recipe,
        cache=cache_config(args),
        progress=progress_bars(args),
        device=args.device,
        threads=args.threads,
    )
    result = run_recipe(recipe, options)
    m = result.metrics
    print(f"{recipe.name}: AP {m.ap:.4f}  AP50 {m.ap50:.4f}  AP75 {m.ap75:.4f}  ({result.wall_time_s:.0f}s)")
    print(f"student weights: {result.student_path}\nmetrics: {result.metrics_path}")
    return 0


def _recipe_base(recipe_path: Path, studies_dir: Path, recipe: Any) -> Path:
    """Relative paths in a recipe resolve against the studies folder for recipes exported from a
    study or living inside it (they point at the shared zoo), else against the recipe's folder."""
    rp, sd = recipe_path.resolve(), studies_dir.resolve()
    return sd if (rp.is_relative_to(sd) or recipe.provenance.get("study")) else rp.parent


def _space(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from curriculum_search.search.space import load_space

    space = load_space(args.space)
    return _with_selection(space, args)


def _with_selection(space, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The space with the command line's selection overrides, validated like the file."""
    import dataclasses

    from curriculum_search.utils.config import FieldError

    over: dict[str, object] = {}
    for opt, key in (("shortlist", "shortlist"), ("margin", "margin"), ("confidence", "confidence")):
        if getattr(args, opt, None) is not None:
            over[key] = getattr(args, opt)
    for opt, key, kind in (("rungs", "rungs", float), ("race_seeds", "seeds", int)):
        raw = getattr(args, opt, None)
        if raw is not None:
            try:
                over[key] = tuple(kind(x) for x in str(raw).split(","))
            except ValueError:
                raise ConfigError(
                    None, f"--{opt.replace('_', '-')}", f"expected comma-separated numbers, got {raw!r}"
                ) from None
    if not over:
        return space
    try:
        sel = dataclasses.replace(space.selection, **over)
        return dataclasses.replace(space, selection=sel)
    except FieldError as exc:
        raise ConfigError(None, f"selection.{exc.field}", exc.message) from None


def _opts(args: argparse.Namespace, space_file: Path | None):  # type: ignore[no-untyped-def]
    from curriculum_search.search.service import SearchOptions
    from curriculum_search.search.storage import PASSWORD_ENV, PASSWORD_FILE_ENV, password_in_url

    if password_in_url(getattr(args, "storage", None)):
        print(
            "warning: the --storage URL holds a password, which other users see in the process "
            f"list; give it in ${PASSWORD_ENV} or in a 0600 file named by ${PASSWORD_FILE_ENV}",
            file=sys.stderr,
        )
    return SearchOptions(
        studies_root=args.studies_dir,
        name=getattr(args, "name", None),
        storage=getattr(args, "storage", None),
        trials=getattr(args, "trials", None),
        timeout_s=getattr(args, "timeout", None),
        workers=getattr(args, "workers", None),
        device=args.device,
        threads=args.threads,
        cache=cache_config(args),
        progress=progress_bars(args),
        seed=getattr(args, "seed", None),
        space_file=space_file,
        wait=bool(getattr(args, "wait", False)),
    )


def _study_lock(args: argparse.Namespace, name: str, *, full: bool):  # type: ignore[no-untyped-def]
    """The study's lock for the whole command (zoo, search, selection, full run): a second
    ``run``/``search``/``select`` of the study refuses at once (or waits with ``--wait``)."""
    import contextlib

    from curriculum_search.search.storage import storage_spec, study_lock

    spec = storage_spec(args.studies_dir, name, args.storage)
    if spec.is_server and not full:
        return contextlib.nullcontext()  # several hosts search one server study (`worker`)
    return study_lock(spec, name, wait=args.wait)  # server: this host's zoo and full/ folder


def _build_zoo(space, args: argparse.Namespace, *, reference: bool = True) -> None:  # type: ignore[no-untyped-def]
    from curriculum_search.models.pretrained import ensure_pretrained, space_specs
    from curriculum_search.search.zoo import build_zoo, format_pool

    ensure_pretrained(space_specs(space), args.space)  # offline: one line before any training

    infos = build_zoo(
        space,
        args.studies_dir,
        cache=cache_config(args),
        device=args.device,
        threads=args.threads,
        progress=progress_bars(args),
        source=args.space,
        reference=reference,
    )
    print(format_pool(infos))


def cmd_search(args: argparse.Namespace, *, full: bool = False) -> int:
    from curriculum_search.search.storage import check_study_name

    if args.workers is not None and args.workers < 1:
        raise ConfigError(None, "--workers", "must be >= 1")
    if args.name is not None:
        check_study_name(args.name)  # before any work (the zoo) is done for it
    space = _space(args)
    with _study_lock(args, args.name or space.name, full=full):
        return _search_locked(space, args, full)


def _search_locked(space, args: argparse.Namespace, full: bool) -> int:  # type: ignore[no-untyped-def]
    from curriculum_search.search.service import run_full, run_search

    # `run`: the race trains the student alone with the shipped student's own protocol and seeds
    _build_zoo(space, args, reference=not full)
    opts = _opts(args, args.space)
    summary = run_search(space, opts)
    if summary.best_trial is None:
        raise StudyError(
            f"study {summary.study_name!r}: no trial completed; see studies/{summary.study_name}/trials/*/trial.log"
        )
    print(
        f"search: best proxy value trial #{summary.best_trial} AP {summary.best_value:.4f}  {summary.best_description}"
        "  (one short run: the selection decides what ships)"
    )
    study_dir = args.studies_dir / summary.study_name
    if full:
        result = run_full(space, opts)
        m = result.metrics
        print(
            f"full run ({m.get('split')} split): AP {m.get('ap', float('nan')):.4f}  AP50 {m.get('ap50', float('nan')):.4f}"
        )
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


def cmd_select(args: argparse.Namespace) -> int:
    from curriculum_search.search.fullrun import run_full

    space = _space(args)
    with _study_lock(args, args.name or space.name, full=True):
        result = run_full(space, _opts(args, args.space))
    print(f"student weights: {result.student_path}")
    print(f"recipe: {args.studies_dir / result.outcome.study_name / 'best_recipe.yaml'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from curriculum_search.search.service import SearchOptions, open_study, run_search, space_of
    from curriculum_search.search.storage import load_study_readonly, storage_spec

    spec = storage_spec(args.studies_dir, args.study, args.storage)
    space = space_of(load_study_readonly(spec, args.study))
    from curriculum_search.models.pretrained import ensure_pretrained, space_specs

    ensure_pretrained(space_specs(space), f"study {args.study}")
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
    import json

    from curriculum_search.search.listing import status_json, study_status

    if args.json:
        print(json.dumps(status_json(args.name, args.studies_dir, args.storage), indent=2))
    else:
        print(study_status(args.name, args.studies_dir, args.storage))
    return 0


def cmd_zoo_build(args: argparse.Namespace) -> int:
    _build_zoo(_space(args), args)
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from curriculum_search.search.zoo import describe_pool, format_pool, student_reference

    space = _space(args)
    infos = describe_pool(space, args.studies_dir)
    ref = student_reference(space, args.studies_dir, train=False)
    print(format_pool([*infos, ref] if ref else infos))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from curriculum_search.dashboard import dashboard_command

    cmd = dashboard_command(
        args.host, args.port, args.storage, args.studies_dir, open_browser=False, expose=args.expose
    )
    print(f"dashboard on http://{args.host}:{args.port}  (Ctrl+C to stop)")
    return subprocess.call(cmd)


HANDLERS = {
    "train": cmd_train,
    "run": cmd_run,
    "select": cmd_select,
    "search": cmd_search,
    "worker": cmd_worker,
    "export": cmd_export,
    "studies": cmd_studies,
    "status": cmd_status,
    "zoo_build": cmd_zoo_build,
    "zoo_list": cmd_zoo_list,
    "dashboard": cmd_dashboard,
}
