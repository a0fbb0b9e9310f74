"""Command line: ``python -m curriculum_search <command>``. The parsers of every command and their
handlers, each a thin layer over a library function (tests call those directly): the search
service, selection and full run, the zoo, the dashboard, and the two ends of the user's data flow,
``init`` (COCO folder -> space file, :mod:`curriculum_search.init_space`) and ``predict`` (student
-> detections, :mod:`curriculum_search.predict`)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from curriculum_search.errors import ConfigError, StudyError, TrialFailure, UserError

DEFAULT_SPACE = "space/default.yaml"

#: OSErrors caused by the folder a command writes to, reported as one line (exit status 2).
_FOLDER_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file is in the way of a folder",
    errno.EEXIST: "a file is in the way of a folder",
}

EPILOG = """\
typical use:
  python -m curriculum_search run                          # embedded default: synthetic data, own teacher zoo
  python -m curriculum_search init --train-images D --train-ann F --val-images D --val-ann F -o space/my.yaml
  python -m curriculum_search predict --weights studies/my/full/student.pt photos/ -o out/ --draw
  python -m curriculum_search run --space space/my.yaml --trials 50 --workers 2
  python -m curriculum_search studies                      # list studies and their best AP
  python -m curriculum_search export --study default -o best.yaml
  python -m curriculum_search train --recipe best.yaml     # full run of a recipe
  streamlit run app.py                                     # dashboard
Every command can be interrupted and re-run: it resumes where it stopped.
"""


# -- parsers ---------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--studies-dir",
        default=os.environ.get("CURRICULUM_SEARCH_STUDIES", "studies"),
        type=Path,
        help="folder holding studies, the teacher zoo and caches (default: ./studies or $CURRICULUM_SEARCH_STUDIES)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars, warnings only (bars are shown only on a terminal; in a log file a "
        "progress line is written every minute instead)",
    )


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N or auto (default: the file's train.device, auto = GPU if present)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads per training process (default: torch's choice)"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not cache teacher outputs (always run the teachers)"
    )
    p.add_argument(
        "--cache-memory-mb",
        type=float,
        default=1024,
        help="RAM for cached teacher outputs per process (default 1024)",
    )
    p.add_argument(
        "--cache-disk-mb",
        type=float,
        default=20480,
        help="disk budget for cached teacher outputs (default 20480)",
    )


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--space",
        default=DEFAULT_SPACE,
        type=Path,
        help=f"search-space YAML (default: {DEFAULT_SPACE}, the embedded synthetic default)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="study name (default: the space's name); the study lives in STUDIES_DIR/NAME/",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="finished trials wanted in the study, baselines included (default: the space's `trials`)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="stop after this many seconds: no new trial starts, running ones are stopped and resume from their checkpoint on the next run (default: the space's `timeout_s`)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="trials (and race runs) at once on this machine, one process each; GPUs assigned round-robin, CPU "
        "threads split (default: one per GPU; on a CPU one per core, at most 4, each with 1 thread: on small "
        "models that finishes more trials per hour than one trial using every core)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (postgresql://..., sqlite:///..., journal:PATH); default: sqlite STUDIES_DIR/NAME/study.db",
    )
    p.add_argument("--seed", type=int, default=None, help="override the space's seed")
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another run/search/select holds this study, wait for it instead of refusing",
    )


def _selection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection (overrides the space file's `selection` block)")
    g.add_argument(
        "--shortlist", type=int, default=None, help="searched curricula raced against the baselines"
    )
    g.add_argument(
        "--rungs",
        default=None,
        help="race budgets as fractions of full.iterations, comma-separated, ending with 1 (e.g. 0.5,1)",
    )
    g.add_argument(
        "--race-seeds", default=None, help="seeds per rung, comma-separated (e.g. 2,3; >= 2 at the last rung)"
    )
    g.add_argument("--margin", type=float, default=None, help="AP a challenger must win by (lower bound)")
    g.add_argument(
        "--confidence",
        type=float,
        default=None,
        help="two-sided confidence of the paired intervals (e.g. 0.9)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curriculum_search",
        description="Search the best multi-teacher distillation curriculum for an object detector with Optuna, then train it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from curriculum_search._version import __version__

    parser.add_argument("--version", action="version", version=f"curriculum_search {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="search (or resume) -> select (race the best curricula against the baselines) -> ship (the main job)",
        description="Build missing zoo teachers, run or resume the search, race the shortlist against the "
        "baselines on common seeds (selection), and ship the winner's full-length student to "
        "STUDIES_DIR/NAME/full/ with its held-out report and STUDIES_DIR/NAME/best_recipe.yaml.",
    )
    _search_args(p)
    p.add_argument(
        "--skip-full",
        action="store_true",
        help="stop after the search and export its best proxy trial (no selection, no full-length run)",
    )
    _selection_args(p)
    _runtime(p)
    _common(p)

    p = sub.add_parser(
        "select",
        help="race the search's best curricula against the baselines, then ship the winner (resumable)",
        description="Selection only (the search must have run): shortlist the best searched curricula by "
        "their noise-aware proxy score, race them and every distilling baseline against the baseline the "
        "proxy ranks first (the incumbent) on common seeds at increasing budgets up to the full length, "
        "keep the incumbent unless a challenger's paired "
        "AP difference clears the margin, and write STUDIES_DIR/NAME/full/. Re-run with a bigger "
        "budget (--shortlist, --seeds) to re-select without re-searching: finished race runs are reused.",
    )
    _search_args(p)
    _selection_args(p)
    _runtime(p)
    _common(p)

    p = sub.add_parser(
        "search",
        help="run or resume the search only",
        description="Run or resume the Optuna study of a space until it has --trials finished trials.",
    )
    _search_args(p)
    _runtime(p)
    _common(p)

    p = sub.add_parser(
        "worker",
        help="join a study on a server database from another machine",
        description="Run trials of an existing study (created by `run`/`search`) against a shared storage, e.g. PostgreSQL; start one per GPU/host.",
    )
    p.add_argument(
        "--storage",
        required=True,
        help="Optuna storage URL shared by all hosts (postgresql://user:pw@host/db or journal:PATH)",
    )
    p.add_argument("--study", required=True, help="study name")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="stop when the study has this many finished trials (default: the study's target)",
    )
    _runtime(p)
    _common(p)

    p = sub.add_parser(
        "train",
        help="train a recipe (student-only weights + metrics)",
        description="Run a recipe YAML to the end. Re-running resumes from the last checkpoint. Works under `torchrun --nproc-per-node N` (DDP).",
    )
    p.add_argument("--recipe", required=True, type=Path, help="recipe YAML (e.g. exported by `export`)")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: STUDIES_DIR/runs/<recipe name>)"
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="ignore existing checkpoints in the output folder and start over",
    )
    _runtime(p)
    _common(p)

    p = sub.add_parser(
        "export",
        help="write a trial's curriculum as a recipe YAML",
        description="Export the best (or a given) trial of a study as a full-length recipe with provenance.",
    )
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--trial", type=int, default=None, help="trial number (default: the best finished trial)")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="recipe file to write (default: print to stdout)"
    )
    p.add_argument(
        "--proxy", action="store_true", help="export the proxy-length recipe instead of the full-length one"
    )
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: the study's SQLite file)")
    _common(p)

    p = sub.add_parser("studies", help="list studies with state, best AP and trial counts")
    p.add_argument("--storage", default=None, help="also list the studies of this storage URL")
    _common(p)

    p = sub.add_parser(
        "status", help="details of one study: trials, selection decision, held-out report, full run"
    )
    p.add_argument("name", help="study name")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (selection decision, fidelity diagnostics, final held-out report)",
    )
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: the study's SQLite file)")
    _common(p)

    p = sub.add_parser("zoo", help="build or list the teacher zoo of a space")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    zp = zsub.add_parser(
        "build",
        help="train every zoo teacher of the space that has no checkpoint yet",
        description="Train missing zoo teachers (and the student-alone reference) of a space into STUDIES_DIR/_zoo/.",
    )
    zp.add_argument(
        "--space", default=DEFAULT_SPACE, type=Path, help=f"search-space YAML (default: {DEFAULT_SPACE})"
    )
    _runtime(zp)
    _common(zp)
    zp = zsub.add_parser("list", help="print the pool with AP, parameters, GFLOPs and latency")
    zp.add_argument(
        "--space", default=DEFAULT_SPACE, type=Path, help=f"search-space YAML (default: {DEFAULT_SPACE})"
    )
    _common(zp)

    p = sub.add_parser("dashboard", help="open the Streamlit dashboard (localhost)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--expose",
        action="store_true",
        help="required with a --host other machines can reach: they can then read every study",
    )
    p.add_argument("--storage", default=None, help="also show the studies of this storage URL")
    _common(p)

    _add_data_parsers(sub)  # init, predict (issue 14)
    return parser


def _logging_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only")


def _add_data_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``init`` and ``predict`` subcommands to the CLI's subparsers."""
    p = sub.add_parser(
        "init",
        help="write a search-space file for your COCO dataset (first step on your own data)",
        description=(
            "Inspect a COCO-format dataset (every annotation and image header is checked) and write a "
            "commented search-space file for it: classes and category ids from the JSON, an image size "
            "suggested from the image and box sizes (the reasoning is printed), a student, a teacher "
            "pool that trains offline (two CNNs and a PVT-v2 transformer, as zoo entries scaled to the "
            "dataset) and budgets sized for this machine. `run --space FILE` works on it without edits."
        ),
        epilog="example:\n  python -m curriculum_search init --train-images data/train --train-ann "
        "data/annotations/train.json \\\n      --val-images data/val --val-ann data/annotations/val.json -o space/parts.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--train-images",
        required=True,
        type=Path,
        help="folder the training JSON's file_name entries are relative to",
    )
    p.add_argument(
        "--train-ann",
        required=True,
        type=Path,
        help="COCO JSON of the training images (images, annotations, categories)",
    )
    p.add_argument("--val-images", required=True, type=Path, help="folder of the validation images")
    p.add_argument(
        "--val-ann",
        required=True,
        type=Path,
        help="COCO JSON of the validation images (AP is measured there)",
    )
    p.add_argument(
        "--test-images",
        type=Path,
        default=None,
        help="optional test set folder: then the selection scores on the validation set and the shipped "
        "student is reported on the test set (default: selection on 20%% of the training images, report on val)",
    )
    p.add_argument(
        "--test-ann", type=Path, default=None, help="COCO JSON of the test images (with --test-images)"
    )
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="space file to write (default: space/NAME.yaml)"
    )
    p.add_argument(
        "--name",
        default=None,
        help="study name written into the file (default: the output file's name, else the dataset folder's)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="use this input size (a multiple of 32) instead of the suggested one",
    )
    p.add_argument(
        "--machine",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="size the budgets for a CPU or a GPU machine (default auto: a GPU if torch sees one)",
    )
    p.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    _logging_args(p)

    p = sub.add_parser(
        "predict",
        help="run a trained student on images: COCO-results JSON, optional drawings",
        description=(
            "Detect objects with a student checkpoint (e.g. studies/NAME/full/student.pt) on image files "
            "or folders. Writes OUT/detections.json (COCO results: image_id, category_id of the training "
            "set, bbox [x, y, w, h] in original image pixels, score), OUT/images.json (the image ids, "
            "files and sizes, COCO `images` entries) and with --draw OUT/drawn/<image>.png."
        ),
    )
    p.add_argument(
        "--weights", required=True, type=Path, help="model checkpoint (studies/NAME/full/student.pt)"
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    p.add_argument(
        "-o", "--output", type=Path, default=Path("predictions"), help="output folder (default: predictions/)"
    )
    p.add_argument("--draw", action="store_true", help="also write each image with its boxes drawn (PNG)")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="boxes drawn with --draw score at least this (default 0.3; the JSON keeps every detection)",
    )
    p.add_argument(
        "--ann",
        type=Path,
        default=None,
        help="COCO JSON whose image ids to use, matched by file name (default: 1..N in file order)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    _logging_args(p)


# -- handlers --------------------------------------------------------------------------------------------
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


def cmd_init(args: argparse.Namespace) -> int:
    from curriculum_search.init_space import init_space

    machine = None if args.machine == "auto" else args.machine
    path, plan = init_space(
        args.train_images,
        args.train_ann,
        args.val_images,
        args.val_ann,
        output=args.output,
        name=args.name,
        machine=machine,
        image_size=args.image_size,
        force=args.force,
        test_images=args.test_images,
        test_ann=args.test_ann,
    )
    s = plan.stats
    print(
        f"dataset: {s.train_images} training images ({s.train_annotated} annotated), {s.val_images} validation "
        f"images{f', {s.test_images} test images' if s.test_images else ''}; classes: {', '.join(f'{n} (id {c})' for n, c in zip(s.class_names, s.category_ids, strict=True))}"
    )
    for note in plan.notes:
        print(f"note: {note}")
    print("image size:")
    for reason in plan.reasons:
        print(f"  {reason}")
    print(
        f"budgets ({plan.machine}): zoo teachers {plan.teacher_iterations} iterations, proxy {plan.proxy_iterations}, "
        f"full run {plan.full_iterations}, {plan.trials} trials"
    )
    print(f"wrote {path}\nnext: python -m curriculum_search run --space {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from curriculum_search.predict import run_predict

    if args.batch_size < 1:
        raise ConfigError(None, "--batch-size", "must be >= 1")
    det_file, n_images, n_dets = run_predict(
        args.weights,
        args.inputs,
        args.output,
        draw=args.draw,
        threshold=args.score_threshold,
        ann_file=args.ann,
        device=args.device,
        batch_size=args.batch_size,
    )
    print(f"{n_images} image(s), {n_dets} detection(s): {det_file}")
    if args.draw:
        print(f"drawings: {args.output / 'drawn'}")
    return 0


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
    "init": cmd_init,
    "predict": cmd_predict,
}


# -- entry point -----------------------------------------------------------------------------------------
def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("PIL", "matplotlib", "urllib3", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    key = args.command if args.command != "zoo" else f"zoo_{args.zoo_command}"
    try:
        return HANDLERS[key](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrialFailure as exc:  # non-finite loss, out of memory: caused by the recipe's settings
        where = getattr(args, "recipe", None) or getattr(args, "space", None) or args.command
        print(f"error: {where}: training stopped: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full, read-only or blocked studies/output folder
        if exc.errno not in _FOLDER_ERRNOS:
            raise
        print(
            f"error: {exc.filename}: {_FOLDER_ERRNOS[exc.errno]}; files saved before are intact, "
            "fix this and re-run the same command to resume",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: everything finished so far is saved; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
