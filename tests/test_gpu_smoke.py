"""``python -m benchmarks.gpu_smoke``: the GPU readiness check's plumbing on the CPU (``--device
cpu``, a one-teacher tiny space) and its refusal without CUDA. No test here needs a GPU."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import __main__ as bench_main
from benchmarks import gpu_smoke
from tests.helpers import TINY, write_space

PHASES = ("zoo", "proxy", "search", "race")


@pytest.mark.slow
def test_cpu_plumbing_writes_every_phase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one zoo teacher (trained in this process) and one stage: the fewest processes that still
    # run every phase (two first trials, one new search trial next to reused baselines, a race)
    space = write_space(
        tmp_path,
        teachers={"a": TINY["teachers"]["a"]},
        search={"n_stages": [1, 1], "feature_losses": ["mse"], "pseudo": [False]},
    )
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--space", str(space), "--out", str(out), "--trials", "3", "--shortlist", "0"]
    assert gpu_smoke.main(argv) == 0

    res = json.loads((out / "gpu_smoke.json").read_text())
    assert res["complete"] and res["within_budget"] and res["wall_s"] <= res["budget_s"] == 480
    assert res["device"] == "cpu" and res["amp"] is False and res["machine"]["cores"]
    for name in PHASES:
        phase = res["phases"][name]
        assert phase["wall_s"] > 0 and phase["images_per_s"] > 0, (name, phase)
        assert not phase.get("failed"), phase
        assert "gpu_util_pct" not in phase  # no GPU: no GPU figures, none made up
    proxy = res["phases"]["proxy"]
    assert [t["what"] for t in proxy["trials"]] == ["student_only", "direct_strongest"]
    assert proxy["images_per_s_one_trial"] > 0 and proxy["one_trial"] == "direct_strongest"
    search = res["phases"]["search"]
    assert search["workers"] == 2 and search["finished"] == 3 and search["trials_per_hour"] > 0
    race = res["phases"]["race"]
    assert race["runs"] >= 2 and {r["seed"] for r in race["race_runs"]} == {0, 1}
    # the space the trials ran: AMP off on the CPU, the race cut down
    used = yaml.safe_load((out / "gpu_smoke_space.yaml").read_text())
    assert used["train"]["amp"] is False and used["train"]["device"] == "cpu"
    assert used["selection"]["seeds"] == [2] and used["selection"]["rungs"] == [1.0]
    printed = capsys.readouterr().out
    assert "**GPU smoke** on `cpu`" in printed and "| race, 2 workers |" in printed

    # each start wipes <out>/studies for a fresh zoo, but never a folder it did not make
    other = tmp_path / "other"
    (other / "studies").mkdir(parents=True)
    (other / "studies" / "keep.txt").write_text("mine")
    assert gpu_smoke.main(["--device", "cpu", "--space", str(space), "--out", str(other)]) == 1
    assert (other / "studies" / "keep.txt").read_text() == "mine"
    assert "was not made by gpu_smoke" in capsys.readouterr().err


@pytest.mark.parametrize(
    "run",
    [
        lambda out: gpu_smoke.main(["--out", str(out)]),
        lambda out: bench_main.main(["--size", "gpu-smoke", "--out", str(out)]),
    ],
)
def test_without_cuda_exits_2_with_one_line(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored afterwards (the check pins one GPU)
    assert run(tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu_smoke needs a CUDA GPU;") and "--device cpu" in err
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.rglob("gpu_smoke.json"))


def test_gpu_sample_falls_back_to_one_nvidia_smi_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.common import GpuSampler, gpu_sample

    log = tmp_path / "calls"
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "37, 1234"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")

    def no_nvml(*a: object) -> int:
        raise ModuleNotFoundError("nvidia-ml-py")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    assert gpu_sample(0) == (37.0, 1234.0)
    assert gpu_sample(1, memory=False) == (37.0, None)
    calls = log.read_text().splitlines()
    assert "--query-gpu=utilization.gpu,memory.used" in calls[0] and calls[0].endswith("-i 3")
    assert "--query-gpu=utilization.gpu " in calls[1] + " " and calls[1].endswith("-i 1")
    with GpuSampler(0.02, memory=True) as s:
        time.sleep(0.3)
    assert s.util and set(s.util) == {37.0} and set(s.mem_mb) == {1234.0} and len(s.times) == len(s.util)

    smi.unlink()  # no nvidia-smi, no NVML: nothing, not an error
    assert gpu_sample(0) == (None, None)


def test_markdown_of_a_gpu_result() -> None:
    util = {"n": 10, "median": 80.0, "min": 40.0, "max": 99.0, "mean": 75.0, "std": 5.0}
    gpu = {"gpu_util_pct": util, "gpu_mem_start_mb": 600.0, "gpu_mem_peak_mb": 5120.0}
    res = {
        "device_name": "NVIDIA H200",
        "torch": "2.14.1",
        "cuda": "13.0",
        "amp": True,
        "amp_dtype": "bfloat16",
        "batch_size": 8,
        "proxy_iterations": 150,
        "full_iterations": 400,
        "workers": 2,
        "budget_s": 480.0,
        "wall_s": 300.0,
        "within_budget": True,
        "complete": True,
        "sampling": {"interval_s": 0.2, "util": "nvidia-smi", "memory": "nvidia-smi"},
        "phases": {
            "zoo": {
                "wall_s": 60.0,
                "images_per_s": 400.0,
                "teachers": [{"name": "medium", "ap": 0.5}],
                **gpu,
            },
            "proxy": {
                "wall_s": 40.0,
                "images_per_s": 90.0,
                "images_per_s_one_trial": 300.0,
                "one_trial": "direct_strongest",
                **gpu,
            },
            "search": {
                "wall_s": 60.0,
                "images_per_s": 150.0,
                "finished": 4,
                "reused": 0,
                "trials_per_hour": 240.0,
                "workers": 2,
                "gpu_util_both_pct": util,
                **gpu,
            },
            "race": {"skipped": "budget spent"},
        },
    }
    md = gpu_smoke.markdown(res)
    assert "`NVIDIA H200`" in md and "AMP bfloat16" in md and "within the 480 s budget" in md
    assert (
        "| first trials, 1 worker | 40.0 | 300.0 (one direct_strongest trial); 90.0 phase | 75 / 80 |" in md
    )
    assert "| 600 | 5120 |" in md and "skipped: budget spent" in md and "240.0 trials/hour" in md
    (line,) = gpu_smoke.headline(res)
    assert (
        "300.0 images/s, GPU utilisation 80% (median)" in line and "240.0 trials/hour with 2 workers" in line
    )
