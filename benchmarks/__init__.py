"""Benchmark suite of ``curriculum_search``.

* ``python -m benchmarks.evidence`` — the headline evidence (issue 16): the whole pipeline repeated
  against every baseline and random search at equal compute, and proxy fidelity, on two tasks;
  writes ``benchmarks/results.json`` and generates ``benchmarks/RESULTS.md`` from it.
* ``python -m benchmarks [--size ci|cpu|gpu] [--only a,b]`` — the component benchmarks below,
  reported in ``benchmarks/PARTS.md``.
* ``python -m benchmarks.gpu_smoke`` (or ``python -m benchmarks --size gpu-smoke``) — the GPU
  readiness check (issue 16): zoo, one CUDA + AMP proxy trial alone, a search with two workers
  sharing the GPU and a short race in at most 8 minutes, with images/s, GPU utilisation and peak
  memory per phase in ``benchmarks/out/gpu-smoke/gpu_smoke.json`` (``--device cpu``: a plumbing
  check without a GPU).

Parts (each also runnable alone as ``python -m benchmarks.<part>``):

* ``step_overhead`` — distillation step time / plain student step time, per method, with and
  without the teacher-output cache (issue 3);
* ``quality`` — final full-run student AP over seeds for the baselines, random search and the
  default search, on two synthetic tasks (issue 6);
* ``search_cost`` — best-found proxy AP against compute for TPE + pruning, TPE without pruning and
  random search; trials/hour with and without the teacher-output cache;
* ``scaling`` — trials/hour with 1 vs 2 workers on the same cores; GPU utilisation and images/s
  of a proxy trial when a GPU is present;
* ``dashboard_render`` — time to render each dashboard page for a generated 1,000-trial study.

Results go to ``benchmarks/out/`` (JSON, git-ignored); ``benchmarks/PARTS.md`` is rewritten from
them, with plots copied to ``benchmarks/plots/``.
"""

from __future__ import annotations

PARTS = ("step_overhead", "quality", "search_cost", "scaling", "dashboard_render")

__all__ = ["PARTS"]
