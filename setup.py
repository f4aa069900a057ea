"""Build the fastloss Cython kernels, with OpenMP when the compiler supports it.

The OpenMP probe compiles and runs a tiny program. When it fails the kernels are built
serial and a warning is printed; ``FASTLOSS_REQUIRE_OPENMP=1`` turns that into an error.
``FASTLOSS_DEBUG=1`` builds with bounds checks and without optimisation.
``FASTLOSS_SANITIZE=1`` builds with AddressSanitizer and UndefinedBehaviorSanitizer (gcc or
clang; every report aborts), for CI's sanitizer run: Python must then preload the
sanitizer runtime (``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``).
"""

import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_openmp_helpers", "_softmax", "_cross_entropy", "_elementwise"]

# Extra flags of some kernels, by compiler family. Their SIMD loops compute both sides of
# a choice and select (the compiler may do so only if it need not preserve floating-point
# traps: -fno-trapping-math keeps IEEE results, infinities and NaN alike).
# -ffp-contract=off: no product and sum is fused but those the kernels fuse explicitly
# (fl_fma_f/d in _simd_rows.h), so an expression has the same bits on every path that
# evaluates it, at any optimisation level (GCC's default for GNU C fuses wherever it
# likes, differently in two inlined copies of one formula). MSVC does not fuse under
# /fp:precise, its default.
# -Wno-psabi: 64-byte vector arguments of inlined helpers are not an ABI matter.
ROW_CFLAGS = {"unix": ["-fno-trapping-math", "-ffp-contract=off", "-Wno-psabi"], "msvc": []}
EXTRA_CFLAGS = {
    "_elementwise": ROW_CFLAGS,
    "_softmax": ROW_CFLAGS,
    "_cross_entropy": ROW_CFLAGS,
}

# Kernels also built for wider SIMD instruction sets, on x86-64 with GCC or clang, where
# the compiler accepts the flags: {kernel: {suffix: flags}}. A variant is a one-line .pyx
# that includes the kernel's source; fastloss._common.simd_kernels picks the widest one
# the CPU runs (AVX2 with FMA; AVX-512 F, CD, BW, DQ and VL as in x86-64-v4). The wider
# builds fuse multiplies and adds (a quarter of the elementwise kernels' time), which
# changes the last bits of a result (within the kernels' tolerances).
AVX2 = ["-mavx2"]
AVX512 = ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl"]
ROW_VARIANTS = {"avx2": [*AVX2, "-mfma"], "avx512": [*AVX512, "-mfma"]}
SIMD_VARIANTS = {
    "_elementwise": ROW_VARIANTS,
    "_softmax": ROW_VARIANTS,
    "_cross_entropy": ROW_VARIANTS,
}
SIMD_PLATFORM = platform.machine().lower() in ("x86_64", "amd64")

# FASTLOSS_SANITIZE=1: compiled and linked with these (gcc or clang).
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n == omp_get_max_threads());
        return 0;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs the preprocessor flag and an external libomp.
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _env_link_flags(compiler_type):
    """LDFLAGS and CFLAGS from the environment, for linking the probe executable.

    setuptools adds CPPFLAGS and CFLAGS to every compile and LDFLAGS to the link of an
    extension, but links an executable with the bare compiler: without these the probe
    would miss, e.g., Homebrew's ``-L$(brew --prefix libomp)/lib`` on macOS and report no
    OpenMP where the extensions would link fine.
    """
    if compiler_type == "msvc":
        return []
    return [flag for name in ("LDFLAGS", "CFLAGS")
            for flag in shlex.split(os.environ.get(name, ""))]


def _probe_openmp(compiler, compile_flags, link_flags):
    """Return (True, "") if an OpenMP program builds and runs, else (False, reason)."""
    tmp = tempfile.mkdtemp(prefix="fastloss-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objects, exe, output_dir=tmp,
                                 extra_preargs=_env_link_flags(compiler.compiler_type),
                                 extra_postargs=link_flags)
        out = subprocess.run(
            [os.path.join(tmp, compiler.executable_filename("probe"))],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        if out.strip() != "1":
            return False, f"the OpenMP probe program printed {out!r}"
        return True, ""
    except Exception as exc:  # any failure means: no usable OpenMP
        return False, f"the compiler cannot build and run an OpenMP program: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compiler_accepts(compiler, flags):
    """Whether the compiler builds a trivial C file with these flags."""
    tmp = tempfile.mkdtemp(prefix="fastloss-flags-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int fastloss_probe(int x) { return x + 1; }\n")
        compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        return True
    except Exception:  # any failure means: not these flags
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kernel_flags(ext_name, family, compiler):
    """Extra flags of one extension, or None to skip it (a SIMD variant this compiler
    cannot build)."""
    name = ext_name.rsplit(".", 1)[-1]
    for base, variants in SIMD_VARIANTS.items():
        for suffix, simd in variants.items():
            if name == f"{base}_{suffix}":
                if family != "unix" or not _compiler_accepts(compiler, simd):
                    return None
                return EXTRA_CFLAGS.get(base, {}).get(family, []) + simd
    return EXTRA_CFLAGS.get(name, {}).get(family, [])


class BuildExt(build_ext):
    """build_ext that probes OpenMP once, records the flags in the extensions, and
    compiles them in parallel (one job per CPU unless --parallel says otherwise)."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        debug = _env_flag("FASTLOSS_DEBUG")
        if ctype == "msvc":
            base = ["/Od"] if debug else ["/O2"]
        else:
            # No -ffast-math and no -march=native: the binary must run on any CPU of the
            # architecture and keep IEEE semantics (-inf masks, NaN propagation). -g0
            # drops the -g of Python's CFLAGS: debug information took 30% of the kernels'
            # compile time (AVX-512 cross-entropy module: 46 -> 32 s), and release wheels
            # are stripped of it anyway.
            base = ["-O0", "-g"] if debug else ["-O3", "-fno-math-errno", "-g0"]
            if _env_flag("FASTLOSS_SANITIZE"):
                # -O1 and line tables (-g1) keep the reports' lines; every report aborts.
                base = ["-O1", "-g1", "-fno-math-errno", "-fno-omit-frame-pointer",
                        *SANITIZE]
        omp_compile, omp_link = _openmp_flags(ctype)
        if _env_flag("FASTLOSS_DISABLE_OPENMP"):
            have_omp, reason = False, "FASTLOSS_DISABLE_OPENMP is set"
        else:
            have_omp, reason = _probe_openmp(self.compiler, omp_compile, omp_link)
        if not have_omp:
            msg = (
                f"fastloss: building the kernels without OpenMP ({reason}); "
                "they will run single-threaded."
            )
            if _env_flag("FASTLOSS_REQUIRE_OPENMP"):
                raise RuntimeError(msg + " FASTLOSS_REQUIRE_OPENMP is set: refusing.")
            warnings.warn(msg, stacklevel=1)
            print(msg, file=sys.stderr)
            omp_compile, omp_link = [], []
        cflags = base + omp_compile
        family = "msvc" if ctype == "msvc" else "unix"
        kept = []
        for ext in self.extensions:
            extra = _kernel_flags(ext.name, family, self.compiler)
            if extra is None:
                print(f"fastloss: not building {ext.name} (no SIMD flags for this "
                      "compiler); the portable kernels serve instead.", file=sys.stderr)
                continue
            kept.append(ext)
            ext.extra_compile_args = cflags + extra + ext.extra_compile_args
            ext.extra_link_args = (omp_link + ext.extra_link_args
                                   + (SANITIZE if _env_flag("FASTLOSS_SANITIZE") else []))
            # What `python -m fastloss info` reports as the build flags.
            ext.define_macros.append(("FASTLOSS_CFLAGS", '"' + " ".join(cflags) + '"'))
        self.extensions = kept
        super().build_extensions()


def _extensions():
    debug = _env_flag("FASTLOSS_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    kernel_dir = os.path.join("src", "fastloss", "_kernels")
    names = list(KERNELS)
    if SIMD_PLATFORM:
        names += [f"{base}_{suffix}" for base, variants in SIMD_VARIANTS.items()
                  for suffix in variants]
    exts = [
        Extension(
            f"fastloss._kernels.{name}",
            [os.path.join(kernel_dir, f"{name}.pyx")],
            include_dirs=[np.get_include(), kernel_dir],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for name in names
    ]
    return cythonize(
        exts,
        include_path=["src"],
        compiler_directives=directives,
        annotate=_env_flag("FASTLOSS_ANNOTATE"),
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
