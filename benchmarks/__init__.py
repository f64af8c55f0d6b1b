"""normscape benchmarks: each pairs our implementation with the naive way in the same process.

Run ``python -m benchmarks`` (full) or ``python -m benchmarks --quick`` (CI smoke test, no timing claims).
Each module ``benchmarks/bench_*.py`` defines ``run(quick: bool) -> list[dict]`` returning result rows made
with :func:`benchmarks.common.result`.
"""
