"""Build the Cython/BLAS core and the C element-wise kernels.

FASTRNN_DEBUG=1 builds a debug extension: Cython bounds/wraparound/initialised checks on,
C code at -O1 -g with AddressSanitizer and UBSan (run it with the sanitizer runtime preloaded).
"""
import os
import tempfile

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


def openmp_flags():
    """["-fopenmp"] if the C compiler builds and links an OpenMP program (gcc; clang with
    libomp), else []: the cells' prange loops then run their parts one after another (same
    results, one core). FASTRNN_OPENMP=0 turns it off."""
    if os.environ.get("FASTRNN_OPENMP", "1") == "0":
        return []
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler
    cc = new_compiler()
    customize_compiler(cc)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objects = cc.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            cc.link_executable(objects, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
        except Exception:                       # no OpenMP: build serial
            return []
    return ["-fopenmp"]


OPENMP = openmp_flags()


def extension(name, pyx, *c_sources, openmp=False):
    """A compiled module: its .pyx with the shared element-wise C kernels (and c_sources)
    linked in; openmp: its prange loops split a batch across threads."""
    omp = OPENMP if openmp else []
    return Extension(
        name,
        sources=[pyx, "csrc/fr_kernels.c", *c_sources],
        include_dirs=["csrc", np.get_include()],
        extra_compile_args=cflags + omp,
        extra_link_args=ldflags + omp,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    )


extensions = [
    extension("fastrnn._head", "fastrnn/_head.pyx", "csrc/fr_gemm.c"),   # output layer, losses
    extension("fastrnn.cells._elman", "fastrnn/cells/_elman.pyx", "csrc/fr_gemm.c",
              openmp=True),
    extension("fastrnn.cells._lstm", "fastrnn/cells/_lstm.pyx", "csrc/fr_gates.c",
              "csrc/fr_gemm.c", openmp=True),
    extension("fastrnn.cells._gru", "fastrnn/cells/_gru.pyx", "csrc/fr_gates.c",
              "csrc/fr_gemm.c", openmp=True),
]
# Test/benchmark hook of the packed GEMM (csrc/fr_gemm.c): tests/test_gemm.py and
# bench/gemm_kernel.py import it. Drop these lines (and fastrnn/_gemm_test.pyx) once the cells
# link fr_gemm.c themselves and the tests reach it through them.
extensions.append(extension("fastrnn._gemm_test", "fastrnn/_gemm_test.pyx", "csrc/fr_gemm.c"))

setup(ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["."]))
