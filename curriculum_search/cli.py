"""Command line: ``python -m curriculum_search <command>``; each command is a thin layer over a
library function (tests call those directly)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from curriculum_search.errors import TrialFailure, UserError

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
        "--shortlist", type=int, default=None, help="searched curricula raced against the best baseline"
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
        help="search (or resume) -> select (race the best curricula against the best baseline) -> ship (the main job)",
        description="Build missing zoo teachers, run or resume the search, race the shortlist against the best "
        "baseline on common seeds (selection), and ship the winner's full-length student to "
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
        help="race the search's best curricula against the best baseline, then ship the winner (resumable)",
        description="Selection only (the search must have run): shortlist the best searched curricula by "
        "their noise-aware proxy score, race them against the best baseline on common seeds at "
        "increasing budgets up to the full length, keep the baseline unless a challenger's paired "
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

    from curriculum_search.cli_data import add_data_parsers  # init, predict (issue 14)

    add_data_parsers(sub)
    return parser


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
    from curriculum_search.cli_data import DATA_HANDLERS  # init, predict (issue 14)
    from curriculum_search.commands import HANDLERS

    handlers = {**HANDLERS, **DATA_HANDLERS}

    key = args.command if args.command != "zoo" else f"zoo_{args.zoo_command}"
    try:
        return handlers[key](args)
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
