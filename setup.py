"""Only the optional native kernels live here; everything else is in pyproject.toml.

``normscape._gradhist`` (the per-step gradient histogram, src/normscape/_gradhist.c) and ``normscape._headstep``
(the training step after the head's first layer, src/normscape/_headstep.c) need a C compiler and the Python
headers. Where they cannot be built the install still succeeds and normscape falls back to torch ops — same
numbers (to float rounding), slower (benchmarks/bench_train.py measures both). Landscapes have no native part.
"""

import sys

from setuptools import Extension, setup

# sqrtf without errno lets the compiler vectorise FRN's 1/sqrt(z^2 + eps) (z^2 + eps > 0: errno is never set)
VECTOR_FLAGS = [] if sys.platform == "win32" else ["-fno-math-errno"]

setup(
    ext_modules=[
        Extension("normscape._gradhist", ["src/normscape/_gradhist.c"], optional=True),
        Extension("normscape._headstep", ["src/normscape/_headstep.c"], extra_compile_args=VECTOR_FLAGS, optional=True),
    ]
)
