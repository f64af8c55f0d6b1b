"""Only the optional native kernels live here; everything else is in pyproject.toml.

``normscape._gradhist`` (the per-step gradient histogram, src/normscape/_gradhist.c) needs a C compiler and the
Python headers. Where it cannot be built the install still succeeds and normscape counts with torch's bincount
instead — the same counts, slower (benchmarks/bench_train.py measures both on the study's own steps).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("normscape._gradhist", ["src/normscape/_gradhist.c"], optional=True),
    ]
)
