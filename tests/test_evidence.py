"""The evidence benchmark (issue 16): its statistics on known inputs, and the whole benchmark on the
tiny space (two pipeline repeats, random search at equal compute, fidelity runs, results.json and
RESULTS.md generated from it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.evidence_stats import (
    across_repeats,
    bootstrap_interval,
    fidelity,
    goals,
    kendall_b,
    noise_ceiling,
    paired,
    pick_quality,
    spearman,
)

ROOT = Path(__file__).resolve().parents[1]


def test_rank_correlations_on_known_orders() -> None:
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert kendall_b(x, [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert kendall_b(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman(x, [1, 2, 3, 5, 4]) == pytest.approx(0.9)
    # τ_b with a tie: 9 concordant, 0 discordant, one tied pair on y -> 9 / sqrt(10 * 9)
    assert kendall_b(x, [1, 2, 3, 4, 4]) == pytest.approx(9 / (10 * 9) ** 0.5)
    assert kendall_b([1, 2], [1, 2]) is None  # too few pairs
    assert kendall_b([1, 2, 3], [1, 1, 1]) is None  # no variation


def test_bootstrap_interval_brackets_a_strong_correlation_and_is_reproducible() -> None:
    x = [float(i) for i in range(12)]
    y = [i + (0.5 if i % 2 else -0.5) for i in x]  # monotone but for neighbour swaps
    iv = bootstrap_interval(x, y, kendall_b, rng=1)
    assert iv is not None and 0.5 < iv[0] <= kendall_b(x, y) <= iv[1] <= 1.0  # type: ignore[operator]
    assert bootstrap_interval(x, y, kendall_b, rng=1) == iv
    assert bootstrap_interval(x[:2], y[:2], kendall_b) is None


def test_noise_ceiling_is_high_when_seeds_agree_and_low_when_they_do_not() -> None:
    agree = [[i + 0.01 * s for s in range(4)] for i in range(8)]
    assert noise_ceiling(agree) == pytest.approx(1.0)
    # seed 0/1 rank the curricula one way, seeds 2/3 the opposite way
    clash = [[i, i, -i, -i] for i in range(8)]
    ceiling = noise_ceiling(clash)
    assert ceiling is not None and ceiling < 0.5
    assert noise_ceiling([[0.1]] * 5) is None  # one seed: no halves


def test_pick_quality_regret_and_probability() -> None:
    # proxy prefers curriculum 2, full length prefers curriculum 0 by 0.05, seeds agree exactly
    proxy = [[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.3, 0.3, 0.3]]
    full = [[0.50, 0.50, 0.50], [0.40, 0.40, 0.40], [0.45, 0.45, 0.45]]
    q = pick_quality(proxy, full)
    assert q["proxy_pick"] == 2 and q["full_best"] == 0 and not q["pick_is_best"]
    assert q["regret"] == pytest.approx(0.05)
    assert q["p_best"] == 0.0 and q["regret_interval"] == pytest.approx([0.05, 0.05])
    good = pick_quality(full, full)
    assert good["pick_is_best"] and good["p_best"] == 1.0 and good["regret"] == 0.0


def test_fidelity_reports_every_figure() -> None:
    proxy = [[0.01 * i + 0.001 * s for s in range(3)] for i in range(12)]
    full = [[0.02 * i + 0.002 * ((s + i) % 3) for s in range(3)] for i in range(12)]
    f = fidelity(proxy, full)
    assert f["n_curricula"] == 12 and f["seeds"] == 3
    assert f["kendall_tau_b"] == pytest.approx(1.0) and f["spearman_rho"] == pytest.approx(1.0)
    assert f["kendall_tau_b_interval"][1] == pytest.approx(1.0)
    assert f["noise_ceiling_tau_b"] is not None and f["full_seed_std"] > 0
    assert f["pick_is_best"] and f["regret"] == 0.0


def test_paired_words_and_goals() -> None:
    better = paired([0.52, 0.55, 0.53], [0.50, 0.51, 0.50])
    assert better["words"] == "beats" and better["interval"][0] > 0 and better["n"] == 3
    noise = across_repeats([0.01, -0.012, 0.003])
    assert noise["words"] == "is within noise of"

    def task(mean: float, lo: float, harm: float, tau: float | None) -> dict:
        return {
            "pipeline": {
                "vs_best_baseline": {"mean": mean, "interval": [lo, mean + 0.01]},
                "harm_rate": harm,
            },
            "seed_std": 0.005,
            "fidelity": {
                "kendall_tau_b": tau,
                "kendall_tau_b_interval": [0.1, 0.9] if tau is not None else None,
            },
        }

    g = goals({"a": task(0.012, 0.002, 0.0, 0.5), "b": task(0.0, -0.004, 0.0, 0.3)})
    assert g["never_worse_on_every_task"] and g["harm_rate_at_most_10pct_on_every_task"]
    assert g["beats_by_0.01_on_some_task"] and g["tau_with_interval_on_every_task"]
    g = goals({"a": task(-0.001, -0.02, 1 / 3, None)})
    per = g["per_task"]["a"]
    assert per["never_worse_than_best_baseline"] is False and per["harm_rate_at_most_10pct"] is False
    assert per["kendall_tau_with_interval"] is False and not g["beats_by_0.01_on_some_task"]


def test_the_report_calls_a_pick_identical_to_the_baseline_identical_not_within_noise() -> None:
    """When the pick is the best baseline on every seed, each paired difference is exactly 0 and
    its interval has zero width: the report says "is identical to", not a noise statement; any
    other difference keeps the race's words."""
    from benchmarks.evidence_report import _words

    same = across_repeats([paired([0.05, 0.06, 0.04], [0.05, 0.06, 0.04])["mean"]] * 3)
    assert same["mean"] == 0 and _words(same) == "is identical to"
    near = across_repeats([0.001, -0.001, 0.0])
    assert near["mean"] == 0 and _words(near) == near["words"] == "is within noise of"
    assert _words(paired([0.52, 0.55, 0.53], [0.50, 0.51, 0.50])) == "beats"


def test_a_stale_task_is_flagged_and_left_out_of_the_goals(tmp_path: Path) -> None:
    """A task measured before a change to what it tests keeps its figures, says so in RESULTS.md,
    and does not count for (or against) the goals; a call without --tasks runs the tasks with
    signal only."""
    from benchmarks import evidence
    from benchmarks.evidence_report import task_section

    fresh = {"complete": True, "pipeline": {"harm_rate": 0.0}}
    old = {
        "complete": True,
        "pipeline": {"harm_rate": 1.0},
        "stale": "The sampler changed.",
        "code": "abc1234",
    }
    results = {"tasks": {"new": fresh, "old": old, "partial": {"complete": False}}}
    assert list(evidence.goal_tasks(results)) == ["new"]
    assert evidence.goals(evidence.goal_tasks(results))["harm_rate_at_most_10pct_on_every_task"]
    text = "\n".join(
        task_section("old", {**old, "pipeline": None, "space_file": "x.yaml"}, tmp_path, tmp_path / "plots")
    )
    assert "Measured before a change" in text and "abc1234" in text and "--tasks old" in text
    assert "Measured before" not in "\n".join(
        task_section("new", {"complete": True}, tmp_path, tmp_path / "plots")
    )
    assert set(evidence.DEFAULT_TASKS) < set(evidence.TASKS) and "default" not in evidence.DEFAULT_TASKS


def test_a_task_rerun_alone_keeps_the_other_tasks_call(tmp_path: Path) -> None:
    """Each task records the call that measured it; a file written before tasks carried their own
    gives them its call fields, and RESULTS.md names each task's call, so rerunning one task with
    `--tasks NAME` does not re-describe the others (machine, wall time, conditions)."""
    from benchmarks import evidence
    from benchmarks.evidence_report import write_report

    def call(date: str, minutes: float, conditions: str) -> dict:
        return {
            "command": f"python -m benchmarks.evidence --conditions {conditions}",
            "machine": {"cpu": "CPU", "cores": 2, "date": date},
            "conditions": conditions,
            "wall_s_this_call": minutes * 60,
            "load_average_end": [1.0, 1.0, 1.0],
        }

    both = call("2026-12-05T07:24:00+00:00", 76, "both tasks, idle")
    old = {"complete": True, "stale": "measured before a change"}
    results = {**both, "tasks": {"a": {"complete": True}, "b": {"complete": True}, "old": old}}
    assert evidence.adopt_call(results) and not evidence.adopt_call(results)
    assert results["tasks"]["a"]["call"] == results["tasks"]["b"]["call"] == both
    assert results["tasks"]["old"]["call"] == {"earlier": True}  # a stale task: not this call's
    alone = call("2026-12-05T09:04:00+00:00", 50, "b alone")
    results.update(alone)
    results["tasks"]["b"]["call"] = alone  # what the call measuring b alone records
    report = write_report(results, tmp_path).read_text()
    assert "- `a`: `python -m benchmarks.evidence --conditions both tasks, idle`" in report
    assert "76 min for its tasks" in report and "Conditions: both tasks, idle" in report
    assert "- `b`: `python -m benchmarks.evidence --conditions b alone`" in report
    assert "50 min for its tasks" in report and "started 2026-12-05T07:24" in report
    assert "- `old`: an earlier call, not recorded" in report


@pytest.mark.slow
def test_evidence_end_to_end_on_the_tiny_space(tmp_path: Path) -> None:
    """Two repeats of the real pipeline, random search at equal compute and the fidelity runs on the
    tiny space; results.json has every headline figure, RESULTS.md is generated from it alone, and
    a second call reuses every run."""
    from benchmarks import evidence

    out = tmp_path / "out"
    results = tmp_path / "bench" / "results.json"
    argv = ["--space", str(ROOT / "space" / "tiny.yaml"), "--reps", "2", "--seeds", "2"]
    argv += ["--curricula", "6", "--out", str(out), "--results", str(results)]
    assert evidence.main(argv) == 0
    data = json.loads(results.read_text())
    t = data["tasks"]["tiny"]
    assert t["complete"]
    # the pipeline: each repeat is a real study with a race whose pick has held-out values per seed
    reps = t["pipeline"]["per_repeat"]
    assert [r["seed"] for r in reps] == [0, 1] and [r["seeds"] for r in reps] == [[0, 1], [1, 2]]
    assert all(len(r["pick_ap"]) == 2 and r["vs_best_baseline"]["n"] == 2 for r in reps)
    assert set(t["pipeline"]["vs_baseline"]) == set(t["baselines"]) >= {"student_only", "direct_strongest"}
    assert t["pipeline"]["best_baseline"] in t["baselines"]
    assert 0.0 <= t["pipeline"]["harm_rate"] <= 1.0
    # the race's student alone and the benchmark's are the same training on the same seeds (the
    # student alone is trained again for this check; the races' distilling runs are reused)
    assert all(r["pairing_check_max_abs_diff"] < 1e-6 for r in reps)
    assert t["runs_reused_from_races"] >= 2  # at least the distilling baselines on the race seeds
    # random search spent the same student iterations (within one proxy trial)
    for p, a in zip(t["pipelines"], t["random_search"], strict=True):
        budget = p["search_iterations"] + p["race_iterations"] - t["space"]["full_iterations"]
        assert abs(a["iterations"] - budget) <= t["space"]["proxy_iterations"]
    # fidelity: >= 6 distinct curricula, each at both budgets on both seeds
    f = t["fidelity"]
    assert f["n_curricula"] >= 6 and len({c["key"] for c in f["curricula"]}) == f["n_curricula"]
    assert all(len(c["proxy_ap"]) == 2 and len(c["full_ap"]) == 2 for c in f["curricula"])
    assert {"kendall_tau_b", "spearman_rho", "noise_ceiling_tau_b", "p_best", "regret"} <= set(f)
    assert "per_task" in data["goals"] and "tiny" in data["goals"]["per_task"]
    assert t["call"]["command"] == data["command"] and t["call"]["machine"] == data["machine"]
    report = (results.parent / "RESULTS.md").read_text()
    assert "## Task `tiny`" in report and "Kendall τ_b" in report and "harm rate" in report.lower()
    assert (results.parent / "plots" / "evidence_tiny_fidelity.html").is_file()
    # --report rewrites RESULTS.md from results.json alone
    (results.parent / "RESULTS.md").unlink()
    assert evidence.main(["--report", "--results", str(results)]) == 0
    assert (results.parent / "RESULTS.md").read_text() == report
    # a second call reuses every study and run (nothing retrained)
    assert evidence.main(argv) == 0
    again = json.loads(results.read_text())["tasks"]["tiny"]
    assert again["fidelity"]["kendall_tau_b"] == f["kendall_tau_b"]
    assert again["timings_s"]["runs"] < 5


def test_unknown_task_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import evidence

    with pytest.raises(SystemExit, match="unknown task 'nope'"):
        evidence.main(["--tasks", "nope", "--results", "/nonexistent/results.json"])
