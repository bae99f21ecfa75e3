"""Build the Cython/BLAS core and the C element-wise kernels.

FASTRNN_DEBUG=1 builds a debug extension: Cython bounds/wraparound/initialised checks on,
C code at -O1 -g with AddressSanitizer and UBSan (run it with the sanitizer runtime preloaded).
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTRNN_DEBUG", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
if DEBUG:
    cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
    ldflags = ["-fsanitize=address,undefined"]
else:
    # -O3 for the vectoriser; no -ffast-math: NaN/inf must propagate exactly as in NumPy.
    cflags = ["-O3"]
    ldflags = []

def extension(name, pyx, *c_sources):
    """A compiled module: its .pyx with the shared element-wise C kernels (and c_sources)
    linked in."""
    return Extension(
        name,
        sources=[pyx, "csrc/fr_kernels.c", *c_sources],
        include_dirs=["csrc", np.get_include()],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    )


extensions = [
    extension("fastrnn._head", "fastrnn/_head.pyx", "csrc/fr_gemm.c"),   # output layer, losses
    extension("fastrnn.cells._elman", "fastrnn/cells/_elman.pyx", "csrc/fr_gemm.c"),
    extension("fastrnn.cells._lstm", "fastrnn/cells/_lstm.pyx", "csrc/fr_gates.c",
              "csrc/fr_gemm.c"),
    extension("fastrnn.cells._gru", "fastrnn/cells/_gru.pyx", "csrc/fr_gates.c",
              "csrc/fr_gemm.c"),
]
# Test/benchmark hook of the packed GEMM (csrc/fr_gemm.c): tests/test_gemm.py and
# bench/gemm_kernel.py import it. Drop these lines (and fastrnn/_gemm_test.pyx) once the cells
# link fr_gemm.c themselves and the tests reach it through them.
extensions.append(extension("fastrnn._gemm_test", "fastrnn/_gemm_test.pyx", "csrc/fr_gemm.c"))

setup(ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["."]))
