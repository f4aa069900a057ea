"""Build fastloss's kernels: one extension module, fastloss._kernels._kernels.

It links
- the Cython seam (_kernels.pyx) and the dispatcher (dispatch.c), compiled once;
- the kernels (kernels.c), compiled once per instruction set of
  src/fastloss/_kernels/instruction_sets.py that the compiler and platform build (the
  baseline always; the others on x86-64 with GCC or Clang), each exporting its table.
The list of instruction sets built goes to a generated header (fl_isa_list.h) from which
the dispatcher checks, at import, which of them the CPU runs.

The OpenMP probe compiles and runs a tiny program. When it fails the kernels are built
serial and a warning is printed; ``FASTLOSS_REQUIRE_OPENMP=1`` turns that into an error.
``FASTLOSS_DEBUG=1`` builds with bounds checks and without optimisation.
``FASTLOSS_SANITIZE=1`` builds with AddressSanitizer and UndefinedBehaviorSanitizer (gcc or
clang; every report aborts), for CI's sanitizer run: Python must then preload the
sanitizer runtime (``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``).
"""

import os
import platform
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_DIR = os.path.join("src", "fastloss", "_kernels")
INSTRUCTION_SETS = runpy.run_path(os.path.join(KERNEL_DIR, "instruction_sets.py"))[
    "INSTRUCTION_SETS"]
SIMD_PLATFORM = platform.machine().lower() in ("x86_64", "amd64")

# The kernels' flags, by compiler family. Their vector loops compute both sides of a choice
# and select (the compiler may do so only if it need not preserve floating-point traps:
# -fno-trapping-math keeps IEEE results, infinities and NaN alike). -ffp-contract=off: no
# product and sum is fused but those the kernels fuse explicitly (simd/vec.h's fl_fma_*),
# so an expression has the same bits on every path that evaluates it, at any optimisation
# level (GCC's default for GNU C fuses wherever it likes, differently in two inlined copies
# of one formula). MSVC does not fuse under /fp:precise, its default. -Wno-psabi: 64-byte
# vector arguments of inlined helpers are not an ABI matter.
KERNEL_CFLAGS = {"unix": ["-fno-trapping-math", "-ffp-contract=off", "-Wno-psabi"],
                 "msvc": []}

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


def isa_list_header(built):
    """fl_isa_list.h for the instruction sets built (entries of INSTRUCTION_SETS, widest
    first): their tables, and each one's CPU test."""
    lines = ["/* Generated by setup.py from instruction_sets.py: the instruction sets built. */",
             "#include <stddef.h>", ""]
    lines += [f"extern const fl_kernels fl_kernels_{isa['name']};" for isa in built]
    lines += ["", f"#define FL_ISA_COUNT {len(built)}",
              "static const fl_kernels* const fl_isa_tables[FL_ISA_COUNT] = {"]
    lines += [f"    &fl_kernels_{isa['name']}," for isa in built]
    lines += ["};", "", "static int fl_isa_check(int k) {"]
    if any(isa["cpu"] for isa in built):
        lines += ["    __builtin_cpu_init();"]
    lines += ["    switch (k) {"]
    for k, isa in enumerate(built):
        test = " && ".join(f'__builtin_cpu_supports("{feature}")' for feature in isa["cpu"])
        lines += [f"    case {k}: return {test or '1'};"]
    lines += ["    default: return 0;", "    }", "}", ""]
    return "\n".join(lines)


class BuildExt(build_ext):
    """build_ext that probes OpenMP once, compiles kernels.c once per instruction set and
    every source of the module in parallel (one job per CPU unless --parallel says
    otherwise), and links them into the one extension."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        family = "msvc" if ctype == "msvc" else "unix"
        debug = _env_flag("FASTLOSS_DEBUG")
        if ctype == "msvc":
            base = ["/Od"] if debug else ["/O2"]
        else:
            # No -ffast-math and no -march=native: the binary must run on any CPU of the
            # architecture and keep IEEE semantics (-inf masks, NaN propagation). -g0
            # drops the -g of Python's CFLAGS: release wheels are stripped of it anyway.
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
        self._cflags = base + omp_compile
        self._kernel_cflags = self._cflags + KERNEL_CFLAGS[family]
        self._link = omp_link + (SANITIZE if _env_flag("FASTLOSS_SANITIZE") else [])
        self._built = [isa for isa in INSTRUCTION_SETS if not isa["flags"]
                       or (SIMD_PLATFORM and family == "unix"
                           and _compiler_accepts(self.compiler, isa["flags"]))]
        skipped = [isa["name"] for isa in INSTRUCTION_SETS if isa not in self._built]
        if skipped:
            print(f"fastloss: not building the kernels for {', '.join(skipped)} (no flags "
                  "for this compiler or platform)", file=sys.stderr)
        super().build_extensions()

    def build_extension(self, ext):
        generated = os.path.join(self.build_temp, "fastloss_generated")
        os.makedirs(generated, exist_ok=True)
        with open(os.path.join(generated, "fl_isa_list.h"), "w") as f:
            f.write(isa_list_header(self._built))
        include_dirs = [*ext.include_dirs, generated]
        # What `python -m fastloss info` reports as the build flags.
        cflags_macro = ("FASTLOSS_CFLAGS", '"' + " ".join(self._cflags) + '"')
        jobs = [([source], self.build_temp, [*ext.define_macros, cflags_macro],
                 self._cflags) for source in ext.sources]
        kernels = os.path.join(KERNEL_DIR, "kernels.c")
        for isa in self._built:
            macros = [("FL_ISA", isa["name"])]
            if not isa["flags"] and len(self._built) > 1:
                # a baseline beside wider builds serves only older CPUs: no block copies
                macros.append(("FL_BLOCK_COPIES", "0"))
            jobs.append(([kernels], os.path.join(self.build_temp, f"isa_{isa['name']}"),
                         macros, self._kernel_cflags + isa["flags"]))

        def compile_one(job):
            sources, output_dir, macros, flags = job
            return self.compiler.compile(sources, output_dir=output_dir, macros=macros,
                                         include_dirs=include_dirs, extra_postargs=flags,
                                         depends=ext.depends)

        with ThreadPoolExecutor(max_workers=self.parallel or 1) as pool:
            objects = [obj for objs in pool.map(compile_one, jobs) for obj in objs]
        self.compiler.link_shared_object(
            objects, self.get_ext_fullpath(ext.name), libraries=self.get_libraries(ext),
            library_dirs=ext.library_dirs, runtime_library_dirs=ext.runtime_library_dirs,
            extra_postargs=self._link, export_symbols=self.get_export_symbols(ext),
            build_temp=self.build_temp, target_lang="c")


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
    headers = [os.path.join(root, name) for root, _, names in os.walk(KERNEL_DIR)
               for name in names if name.endswith(".h")]
    exts = [
        Extension(
            "fastloss._kernels._kernels",
            [os.path.join(KERNEL_DIR, "_kernels.pyx"), os.path.join(KERNEL_DIR, "dispatch.c")],
            include_dirs=[np.get_include(), KERNEL_DIR],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            depends=headers,
        )
    ]
    return cythonize(
        exts,
        include_path=["src"],
        compiler_directives=directives,
        annotate=_env_flag("FASTLOSS_ANNOTATE"),
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
