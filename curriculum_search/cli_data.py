"""CLI for the two ends of the user's data flow: ``init`` (COCO folder -> space file) and
``predict`` (student -> detections). Thin handlers over :mod:`curriculum_search.init_space` and
:mod:`curriculum_search.predict`; ``cli.py`` adds these parsers and handlers."""

from __future__ import annotations

import argparse
from pathlib import Path


def _logging_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only")


def add_data_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    from curriculum_search.errors import ConfigError
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


DATA_HANDLERS = {"init": cmd_init, "predict": cmd_predict}
