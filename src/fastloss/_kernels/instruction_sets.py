"""The instruction sets the kernels are compiled for: the one place they are declared.

setup.py compiles the kernels' translation unit (``kernels.c``) once per entry, with its
``flags``, and writes the list into a generated header (``fl_isa_list.h``) from which the
dispatcher (``dispatch.c``) checks each entry's ``cpu`` features at run time; the Python
layer reads the names from the compiled module (``_kernels.isa_names()``). Widest first:
the dispatcher takes the first entry the CPU runs. The last entry is the baseline, built
everywhere, with no flags; the others are built only on x86-64 by GCC and Clang. A
baseline built beside others serves only CPUs without them, and is built without the
block kernels' per-count copies (engine/blocks.h's FL_BLOCK_COPIES): their build time
is spent where the CPUs are.

Pure data: setup.py loads this file by path, before the package is built.
"""

INSTRUCTION_SETS = (
    {
        "name": "avx512",
        # x86-64-v4's AVX-512 subsets, with fused multiply-add
        "flags": ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl",
                  "-mfma"],
        "cpu": ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"],
    },
    {
        "name": "avx2",
        "flags": ["-mavx2", "-mfma"],
        "cpu": ["avx2", "fma"],
    },
    {
        "name": "baseline",
        "flags": [],
        "cpu": [],
    },
)
