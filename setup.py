"""Only the optional native kernel lives here; everything else is in pyproject.toml.

``normscape._gradhist`` (the per-step gradient histogram, src/normscape/_gradhist.c) needs a C compiler and the
Python headers. Where it cannot be built the install still succeeds and normscape.gradhist counts with torch
instead — same counts, slower (benchmarks/bench_train.py measures both).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("normscape._gradhist", ["src/normscape/_gradhist.c"], optional=True)])
