"""Only the optional native kernels live here; everything else is in pyproject.toml.

``normscape._gradhist`` (the per-step gradient histogram, src/normscape/_gradhist.c) and ``normscape._planekernel``
(the landscape's hidden activations, src/normscape/_planekernel.c) need a C compiler and the Python headers. Where
they cannot be built the install still succeeds and normscape falls back to torch ops — same numbers (to float
rounding), slower (benchmarks/bench_train.py and bench_landscape.py measure both).
"""

import sys

from setuptools import Extension, setup

# sqrtf without errno lets the compiler vectorise FRN's 1/sqrt(z^2 + eps) (z^2 + eps > 0: errno is never set)
VECTOR_FLAGS = [] if sys.platform == "win32" else ["-fno-math-errno"]

setup(
    ext_modules=[
        Extension("normscape._gradhist", ["src/normscape/_gradhist.c"], optional=True),
        Extension(
            "normscape._planekernel", ["src/normscape/_planekernel.c"], extra_compile_args=VECTOR_FLAGS, optional=True
        ),
    ]
)
