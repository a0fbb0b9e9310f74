"""Is the data loader the bottleneck? Loader images/s alone vs training-step images/s (issue 14).

    python -m benchmarks.loader [--images DIR --ann FILE] [--image-size 320] [--batch-size 8]
                                [--workers 0,auto] [--batches 30] [--device auto] [--threads N]

Without ``--images/--ann`` it writes a "real-looking" dataset once into ``benchmarks/out/loader_data``:
JPEG photos of mixed sizes (640x480 to 1280x960, quality 90) with a few boxes each, the kind of
folder a user brings, where decoding dominates loading.

Three measurements on the same images, each after one warm-up batch (worker start-up excluded):

* loader alone: batches from the trainer's :func:`~curriculum_search.data.make_loader` (shuffled,
  ``hflip``, persistent workers) for each ``--workers`` value (``auto`` = the count training uses
  by default, :func:`~curriculum_search.data.loader.default_num_workers`);
* training step alone: the default space's student (FCOS MobileNetV3-small-0.5, FPN 32) forward +
  backward + AdamW step on batches loaded beforehand (no loading inside the timing);
* training with the loader: the same step fed by the loader, for each ``--workers`` value.

If loader images/s (auto) is well above step images/s, the loader can keep up; if the training-with-
loader figure falls below the step figure, loading costs throughput (on a CPU-only machine the
workers also compete with the training threads for the cores). With workers, up to 4 batches per
worker are prefetched during the warm-up batch, so short measurements flatter the worker figures a
little; use ``--batches`` well above that. Prints a table and writes
``benchmarks/out/loader.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.common import OUT_DIR, machine_info, machine_line


def make_photos(root: Path, n: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """``n`` JPEG "photos" of mixed sizes with 1-4 boxes each, plus their COCO JSON (cached)."""
    images_dir, ann = root / "images", root / "annotations.json"
    if ann.is_file():
        return images_dir, ann
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (1024, 768), (1280, 960), (800, 600), (1280, 720), (720, 960)]
    images, anns = [], []
    for k in range(n):
        w, h = sizes[k % len(sizes)]
        base = rng.integers(0, 255, size=(h // 8, w // 8, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)  # smooth, photo-like
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 5))):
            bw, bh = int(rng.integers(30, w // 3)), int(rng.integers(30, h // 3))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            draw.ellipse([x, y, x + bw, y + bh], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            anns.append(
                {"id": len(anns) + 1, "image_id": k + 1, "category_id": 1, "bbox": [x, y, bw, bh],
                 "area": bw * bh, "iscrowd": 0}
            )  # fmt: skip
        im.save(images_dir / f"{k:04d}.jpg", quality=90)
        images.append({"id": k + 1, "file_name": f"{k:04d}.jpg", "width": w, "height": h})
    ann.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "obj"}]})
    )
    return images_dir, ann


def _loader_rate(ds: Any, batch: int, workers: int, batches: int, seed: int = 0) -> float:
    from curriculum_search.data import infinite_batches, make_loader

    loader = make_loader(ds, batch, shuffle=True, seed=seed, num_workers=workers, drop_last=True)
    stream = infinite_batches(loader)
    next(stream)  # warm-up: worker start-up is not what training pays per batch
    t0 = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - t0)


def _student(image_size: int, device: torch.device) -> Any:
    from curriculum_search.models import DetectorSpec, build_detector

    spec = DetectorSpec(
        arch="fcos", backbone="mobilenetv3_small_050", num_classes=1, fpn_channels=32, image_size=image_size
    )
    return build_detector(spec).to(device).train()


def _step(
    model: Any, opt: torch.optim.Optimizer, images: torch.Tensor, targets: list[dict[str, Any]]
) -> None:
    out = model(images, targets)
    loss = sum(out.losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _targets(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
        for t in targets
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from curriculum_search.data import CocoDetection, TransformConfig, infinite_batches, make_loader
    from curriculum_search.data.loader import default_num_workers
    from curriculum_search.utils.runtime import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images and args.ann:
        images_dir, ann = Path(args.images), Path(args.ann)
    else:
        images_dir, ann = make_photos(OUT_DIR / "loader_data")
    ds = CocoDetection(images_dir, ann, TransformConfig(image_size=args.image_size, hflip=True))
    device = pick_device(args.device)
    auto = default_num_workers()
    counts = [auto if w == "auto" else int(w) for w in args.workers.split(",")]
    result: dict[str, Any] = {
        "machine": machine_info(),
        "images": len(ds),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": str(device),
        "auto_workers": auto,
        "loader_images_per_s": {},
    }
    for w in counts:
        result["loader_images_per_s"][str(w)] = _loader_rate(ds, args.batch_size, w, args.batches)
    # training step alone, on batches loaded beforehand
    model = _student(args.image_size, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = make_loader(ds, args.batch_size, shuffle=True, seed=1, num_workers=0, drop_last=True)
    stream = infinite_batches(loader)
    pre = [next(stream) for _ in range(min(args.steps, len(loader)))]
    batches = [(x.to(device), _targets(t, device)) for x, t in pre]
    _step(model, opt, *batches[0])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        _step(model, opt, *batches[i % len(batches)])
    _sync(device)
    result["step_images_per_s"] = args.steps * args.batch_size / (time.perf_counter() - t0)
    # training fed by the loader (each worker count, pinned memory on CUDA)
    result["train_with_loader_images_per_s"] = {}
    for w in counts:
        loader = make_loader(
            ds,
            args.batch_size,
            shuffle=True,
            seed=2,
            num_workers=w,
            drop_last=True,
            pin_memory=device.type == "cuda",
        )
        stream = infinite_batches(loader)
        x, t = next(stream)
        _step(model, opt, x.to(device), _targets(t, device))
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            x, t = next(stream)
            _step(model, opt, x.to(device, non_blocking=True), _targets(t, device))
        _sync(device)
        rate = args.steps * args.batch_size / (time.perf_counter() - t0)
        result["train_with_loader_images_per_s"][str(w)] = rate
    return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"Machine: {machine_line(r['machine'])}",
        f"{r['images']} images, {r['image_size']} px input, batch {r['batch_size']}, device {r['device']}, "
        f"automatic worker count {r['auto_workers']}",
        "",
        "| what | images/s |",
        "| --- | --- |",
    ]
    for w, rate in r["loader_images_per_s"].items():
        lines.append(
            f"| loader alone, {w} worker(s){' (auto)' if int(w) == r['auto_workers'] else ''} | {rate:.1f} |"
        )
    lines.append(f"| training step alone (batches preloaded) | {r['step_images_per_s']:.1f} |")
    for w, rate in r["train_with_loader_images_per_s"].items():
        lines.append(f"| training step fed by the loader, {w} worker(s) | {rate:.1f} |")
    auto_rate = r["loader_images_per_s"].get(str(r["auto_workers"]))
    step = r["step_images_per_s"]
    fed = r["train_with_loader_images_per_s"].get(str(r["auto_workers"]), step)
    if auto_rate is not None:
        verdict = "delivers more than" if auto_rate >= 1.2 * step else "delivers less than"
        lines += ["", f"Alone, the loader (auto workers) {verdict} the training step consumes."]
        if fed < 0.9 * step:
            lines.append(
                f"Fed by it, training runs at {fed / step:.0%} of its preloaded speed: loading costs "
                "throughput here (a too slow loader, or workers competing with training for the CPU cores)."
            )
        else:
            lines.append(
                f"Fed by it, training runs at {fed / step:.0%} of its preloaded speed: loading is not the bottleneck."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--images", default=None, help="image folder of a COCO dataset (default: generated JPEG photos)"
    )
    p.add_argument("--ann", default=None, help="its COCO JSON")
    p.add_argument("--image-size", type=int, default=320, help="model input size (default 320)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument(
        "--workers", default="0,auto", help="loader worker counts to time, comma-separated (default 0,auto)"
    )
    p.add_argument(
        "--batches", type=int, default=48, help="batches timed per loader measurement (default 48)"
    )
    p.add_argument("--steps", type=int, default=12, help="training steps timed (default 12)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads of the training step (default: torch's)"
    )
    args = p.parse_args(argv)
    r = run(args)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "loader.json").write_text(json.dumps(r, indent=2))
    print(report(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
