"""Teacher-output cache: hits skip the teacher, bounds hold, corrupt/stale entries are rebuilt."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from curriculum_search.distill.cache import (
    CACHE_FORMAT_VERSION,
    CacheConfig,
    TeacherCache,
    TeacherOutput,
    TeacherRunner,
    cache_namespace,
    decode_entry,
    encode_entry,
    teacher_key,
)
from curriculum_search.errors import ConfigError
from curriculum_search.models import Detector, DetectorSpec, build_detector
from curriculum_search.utils.config import from_dict

torch.set_num_threads(1)

# fpn_channels must be a multiple of 32 for FCOS' GroupNorm(32) head.
SPEC = DetectorSpec(
    arch="fcos", backbone="resnet10t", num_classes=3, fpn_channels=32, image_size=64, head_convs=1
)
N_IMAGES = 8
MB = 1024 * 1024


@pytest.fixture(scope="module")
def teacher() -> Detector:
    torch.manual_seed(0)
    return build_detector(SPEC).eval()


@pytest.fixture(scope="module")
def bank() -> torch.Tensor:
    """Image ``i`` of the fake dataset; variant 1 is its mirror image."""
    return torch.randn(N_IMAGES, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def batch(bank: torch.Tensor, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    images = torch.stack([bank[i].flip(-1) if v == 1 else bank[i] for i, v in keys])
    return images, [{"index": i, "variant": v} for i, v in keys]


def fresh(model: Detector, images: torch.Tensor) -> Any:
    with torch.inference_mode():
        return model(images, detections=True)


def runner(model: Detector, cache: TeacherCache | None, cacheable: bool = True) -> TeacherRunner:
    return TeacherRunner(model, cache, need_dense=True, need_detections=True, cacheable=cacheable)


def make_cache(model: Detector, config: CacheConfig) -> TeacherCache:
    return TeacherCache.for_teacher(
        config, teacher_key(model), "data123", need_dense=True, need_detections=True
    )


def assert_close_to_fresh(out: TeacherOutput, model: Detector, images: torch.Tensor) -> None:
    ref = fresh(model, images)
    assert len(out.features) == len(ref.features) == 5
    for got, want in zip(out.features, ref.features):
        assert got.shape == want.shape
        torch.testing.assert_close(got.float(), want, rtol=2e-3, atol=2e-3)
    assert out.dense is not None and set(out.dense) == set(ref.dense)
    for name, want in ref.dense.items():
        torch.testing.assert_close(out.dense[name].float(), want, rtol=2e-3, atol=2e-3)
    assert out.detections is not None
    for got_det, want_det in zip(out.detections, ref.detections):
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(got_det[k], want_det[k])


def entry_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*-*.pt"))


# ------------------------------------------------------------------------------------ hits


def test_second_pass_runs_no_teacher_forward_and_matches_fresh(teacher: Detector, bank: torch.Tensor) -> None:
    cache = make_cache(teacher, CacheConfig())
    run = runner(teacher, cache)
    batches = [[(0, 0), (1, 0), (2, 1), (3, 0)], [(4, 0), (5, 1), (6, 0), (7, 0)]]
    for keys in batches:
        run(*batch(bank, keys))
    assert (run.forward_calls, run.images_forwarded) == (2, 8)
    assert (cache.stats.hits, cache.stats.misses) == (0, 8)
    for keys in batches:
        images, targets = batch(bank, keys)
        out = run(images, targets)
        assert_close_to_fresh(out, teacher, images)
    assert (run.forward_calls, run.images_forwarded) == (2, 8)
    assert cache.stats.hits == 8
    assert out.features[0].dtype == torch.float16 and out.dense is not None
    assert out.dense["cls_logits"].dtype == torch.float16


def test_partially_cached_batch_forwards_only_missing_images_in_batch_order(
    teacher: Detector, bank: torch.Tensor
) -> None:
    run = runner(teacher, make_cache(teacher, CacheConfig()))
    run(*batch(bank, [(0, 0), (1, 0)]))
    keys = [(2, 0), (0, 0), (3, 1), (1, 0), (2, 0)]  # two cached, two new, one duplicate
    images, targets = batch(bank, keys)
    out = run(images, targets)
    assert (run.forward_calls, run.images_forwarded) == (2, 4)
    assert_close_to_fresh(out, teacher, images)


def test_outputs_are_ordinary_tensors_usable_in_autograd(teacher: Detector, bank: torch.Tensor) -> None:
    config = CacheConfig(feature_dtype="float32")
    run = runner(teacher, make_cache(teacher, config))
    images, targets = batch(bank, [(0, 0), (1, 0)])
    for _ in range(2):  # first from the forward, then from the cache
        out = run(images, targets)
        t = out.features[0]
        assert t.dtype == torch.float32 and not t.is_inference()
        student = torch.ones_like(t, requires_grad=True)
        (student * t).sum().backward()  # mul saves the teacher tensor for backward
        assert torch.equal(student.grad, t)


def test_memory_lru_evicts_least_recently_used() -> None:
    record_bytes = 1000 * 2  # fp16
    cache = TeacherCache(CacheConfig(max_memory_mb=2.5 * record_bytes / MB), "lru")

    def rec(v: float) -> dict[str, torch.Tensor]:
        return {"f0": torch.full((1000,), v, dtype=torch.float16)}

    cache.put(0, 0, rec(0))
    cache.put(1, 0, rec(1))
    assert cache.get(0, 0) is not None  # 0 is now the most recently used
    cache.put(2, 0, rec(2))
    assert cache.memory_keys() == [(0, 0), (2, 0)]
    assert cache.get(1, 0) is None
    assert cache.stats.bytes_in_memory == 2 * record_bytes
    assert cache.stats.evictions == 1
    assert float(cache.get(2, 0)["f0"][0]) == 2.0  # type: ignore[index]


# ------------------------------------------------------------------------------------ disk


def test_new_cache_on_same_root_hits_from_disk(teacher: Detector, bank: torch.Tensor, tmp_path: Path) -> None:
    config = CacheConfig(root=tmp_path)
    keys = [(0, 0), (1, 1), (2, 0)]
    first = runner(teacher, make_cache(teacher, config))
    first(*batch(bank, keys))
    files = entry_files(tmp_path)
    assert [f.name for f in files] == ["0-0.pt", "1-1.pt", "2-0.pt"]
    manifest = json.loads((files[0].parent / "manifest.json").read_text())
    assert manifest["format"] == CACHE_FORMAT_VERSION
    assert manifest["teacher_key"] == teacher_key(teacher) and manifest["dataset_fingerprint"] == "data123"
    assert manifest["stores"] == ["features", "dense", "detections"]

    # "another process": same root, new cache and runner, nothing in memory
    cache = make_cache(teacher, config)
    second = runner(teacher, cache)
    images, targets = batch(bank, keys)
    out = second(images, targets)
    assert second.forward_calls == 0
    assert (cache.stats.hits, cache.stats.misses, cache.stats.corrupt_rebuilt) == (3, 0, 0)
    assert_close_to_fresh(out, teacher, images)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a torch file" * 10)


def _rewrite(path: Path, entry: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(entry, buf)
    path.write_bytes(buf.getvalue())


def _tamper_values(path: Path) -> None:  # valid file, checksum mismatch
    entry = torch.load(path, weights_only=True)
    entry["blob"][-1] ^= 1
    _rewrite(path, entry)


def _drop_key(path: Path) -> None:  # valid file and checksum, but incomplete
    record = decode_entry(torch.load(path, weights_only=True))
    assert record is not None
    del record["d.cls_logits"]
    _rewrite(path, encode_entry(record))


def _old_format(path: Path) -> None:
    entry = torch.load(path, weights_only=True)
    entry["format"] = CACHE_FORMAT_VERSION + 1
    _rewrite(path, entry)


def _bad_layout(path: Path) -> None:  # checksum fine, layout points outside the blob
    entry = torch.load(path, weights_only=True)
    entry["layout"][0][3] = entry["blob"].numel()
    _rewrite(path, entry)


@pytest.mark.parametrize("damage", [_truncate, _garbage, _tamper_values, _drop_key, _old_format, _bad_layout])
def test_corrupt_entry_is_detected_counted_and_rebuilt(
    teacher: Detector, bank: torch.Tensor, tmp_path: Path, damage: Any
) -> None:
    config = CacheConfig(root=tmp_path)
    keys = [(0, 0), (1, 0), (2, 0)]
    runner(teacher, make_cache(teacher, config))(*batch(bank, keys))
    victim = next(f for f in entry_files(tmp_path) if f.name == "1-0.pt")
    good_bytes = victim.read_bytes()
    damage(victim)

    cache = make_cache(teacher, config)
    run = runner(teacher, cache)
    images, targets = batch(bank, keys)
    out = run(images, targets)
    assert (run.forward_calls, run.images_forwarded) == (1, 1)
    assert (cache.stats.corrupt_rebuilt, cache.stats.hits, cache.stats.misses) == (1, 2, 1)
    assert_close_to_fresh(out, teacher, images)
    # rewritten with the same content, and readable by the next process
    assert victim.read_bytes() != b"" and len(victim.read_bytes()) == len(good_bytes)
    again = make_cache(teacher, config)
    assert again.get(1, 0) is not None and again.stats.corrupt_rebuilt == 0


@pytest.mark.parametrize("manifest_text", ["other-format", "{not json"])
def test_stale_manifest_wipes_the_namespace(
    teacher: Detector, bank: torch.Tensor, tmp_path: Path, manifest_text: str
) -> None:
    config = CacheConfig(root=tmp_path)
    runner(teacher, make_cache(teacher, config))(*batch(bank, [(0, 0), (1, 0)]))
    folder = entry_files(tmp_path)[0].parent
    manifest = folder / "manifest.json"
    good = json.loads(manifest.read_text())
    if manifest_text == "other-format":
        manifest.write_text(json.dumps({**good, "format": CACHE_FORMAT_VERSION - 1}))
    else:
        manifest.write_text(manifest_text)
    with pytest.warns(UserWarning, match="stale") as record:
        cache = make_cache(teacher, config)
    assert len(record) == 1
    assert entry_files(tmp_path) == []
    assert json.loads(manifest.read_text()) == good
    assert cache.get(0, 0) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_cache(teacher, config)  # an up-to-date manifest is kept silently


def test_disk_bound_stops_writing_with_one_warning_and_keeps_foreign_files(
    teacher: Detector, bank: torch.Tensor, tmp_path: Path
) -> None:
    foreign = tmp_path / "someone-else" / "0-0.pt"
    foreign.parent.mkdir()
    foreign.write_bytes(b"x" * 5000)
    probe = tmp_path.parent / (tmp_path.name + "-probe")
    runner(teacher, make_cache(teacher, CacheConfig(root=probe)))(*batch(bank, [(0, 0)]))
    entry_size = entry_files(probe)[0].stat().st_size
    limit = 5000 + 3.5 * entry_size + 1000  # foreign file + 3 entries + manifest slack
    config = CacheConfig(root=tmp_path, max_disk_mb=limit / MB)
    cache = make_cache(teacher, config)
    run = runner(teacher, cache)
    keys = [(i, 0) for i in range(N_IMAGES)]
    with pytest.warns(UserWarning, match="max_disk_mb") as record:
        run(*batch(bank, keys[:4]))
        run(*batch(bank, keys[4:]))
    assert len(record) == 1
    written = [f for f in entry_files(tmp_path) if f != foreign]
    assert len(written) == 3 and cache.stats.disk_writes == 3
    total = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert total <= limit
    assert foreign.read_bytes() == b"x" * 5000
    run(*batch(bank, keys))  # the memory layer still holds everything
    assert run.forward_calls == 2


def test_fp16_storage_on_disk(teacher: Detector, bank: torch.Tensor, tmp_path: Path) -> None:
    sizes = {}
    for dtype in ("float16", "float32"):
        root = tmp_path / dtype
        runner(teacher, make_cache(teacher, CacheConfig(root=root, feature_dtype=dtype)))(
            *batch(bank, [(0, 0)])
        )
        (path,) = entry_files(root)
        record = decode_entry(torch.load(path, weights_only=True))
        assert record is not None
        want = torch.float16 if dtype == "float16" else torch.float32
        assert {record[k].dtype for k in record if k.startswith("f")} == {want}
        assert {record[k].dtype for k in record if k.startswith("d.")} == {torch.float16}
        assert record["f0"].shape == (32, 8, 8)
        sizes[dtype] = sum(record[k].numel() * record[k].element_size() for k in record if k.startswith("f"))
    assert sizes["float32"] == 2 * sizes["float16"]


# ------------------------------------------------------------------------------------ bypass


def test_non_cacheable_warns_once_and_forwards_every_time(teacher: Detector, bank: torch.Tensor) -> None:
    cache = make_cache(teacher, CacheConfig())
    with pytest.warns(UserWarning, match="bypassed.*hflip") as record:
        run = runner(teacher, cache, cacheable=False)
        images, targets = batch(bank, [(0, 0), (1, 0)])
        out1 = run(images, targets)
        out2 = run(images, targets)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert (run.forward_calls, run.images_forwarded) == (2, 4)
    assert cache.memory_keys() == [] and cache.stats.hits == 0
    assert out1.features[0].dtype == torch.float32  # full precision when not cached
    torch.testing.assert_close(out1.features[0], out2.features[0])


def test_disabled_or_missing_cache_forwards_silently(teacher: Detector, bank: torch.Tensor) -> None:
    images, targets = batch(bank, [(0, 0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cache in (None, make_cache(teacher, CacheConfig(enabled=False))):
            run = runner(teacher, cache, cacheable=False)
            run(images, targets)
            run(images, [{}])  # no index needed without a cache
            assert run.forward_calls == 2


def test_features_only_runner_skips_head(teacher: Detector, bank: torch.Tensor) -> None:
    run = TeacherRunner(
        teacher, make_cache(teacher, CacheConfig()), need_dense=False, need_detections=False, cacheable=True
    )
    images, targets = batch(bank, [(0, 0), (1, 0)])
    out = run(images, targets)
    assert out.dense is None and out.detections is None and len(out.features) == 5
    run(images, targets)
    assert run.forward_calls == 1


def test_missing_index_is_a_clear_error(teacher: Detector, bank: torch.Tensor) -> None:
    run = runner(teacher, make_cache(teacher, CacheConfig()))
    with pytest.raises(KeyError, match="target 0 has no 'index'"):
        run(bank[:1], [{"variant": 0}])


# ------------------------------------------------------------------------------------ keys


def test_teacher_key_follows_weights_not_identity() -> None:
    torch.manual_seed(0)
    a = build_detector(SPEC)
    torch.manual_seed(0)
    b = build_detector(SPEC)
    key = teacher_key(a)
    assert len(key) == 16 and key == teacher_key(b) == teacher_key(a)
    with torch.no_grad():
        next(b.parameters()).add_(1e-3)  # in place: the memoised key must notice
    assert teacher_key(b) != key
    c = build_detector(SPEC.with_updates(score_threshold=0.3))
    c.load_state_dict(a.state_dict())
    assert teacher_key(c) != key  # same weights, other post-processing


def test_namespace_separates_what_is_stored() -> None:
    names = {
        cache_namespace("t", "d", dense, det, dtype)
        for dense in (True, False)
        for det in (True, False)
        for dtype in ("float16", "float32")
    }
    assert len(names) == 8
    assert cache_namespace("t", "d", True, False, "float16").endswith("-fp16-features-dense")
    assert cache_namespace("t", "d", True, False) != cache_namespace("t", "d2", True, False)


def test_cache_config_from_dict_names_the_field() -> None:
    cfg = from_dict(CacheConfig, {"root": "x", "max_memory_mb": 10})
    assert cfg.root == Path("x") and cfg.max_memory_mb == 10.0
    with pytest.raises(ConfigError, match=r"space\.yaml: cache\.max_disk_mb: must be >= 0"):
        from_dict(CacheConfig, {"max_disk_mb": -1}, path="space.yaml", prefix="cache")
    with pytest.raises(ConfigError, match="feature_dtype"):
        from_dict(CacheConfig, {"feature_dtype": "bfloat16"}, path="space.yaml", prefix="cache")


def test_entry_encoding_round_trips_every_dtype() -> None:
    record = {
        "f0": torch.randn(3, 5, 7).half(),
        "d.x": torch.randn(11, 3),
        "det.labels": torch.tensor([1, 2, 3]),
        "det.empty": torch.zeros(0, 4),
        "flag": torch.tensor(True),
    }
    entry = encode_entry(record)
    assert entry["blob"].dtype == torch.uint8
    back = decode_entry(entry)
    assert back is not None and set(back) == set(record)
    for k, v in record.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    assert decode_entry(entry, required=["missing"]) is None
