#!/usr/bin/python3
"""Build the `bld_torch` Python module from bld's headers, offline, against Debian's python3-torch.

    /usr/bin/python3 python/build_bld_torch.py --out build-py
    PYTHONPATH=build-py /usr/bin/python3 -c "import bld_torch"

Uses torch.utils.cpp_extension.load (ninja; g++ with -std=c++20). The result is a package
directory OUT/bld_torch/ holding __init__.py and the compiled _bld_torch extension; the object
files stay in OUT/.build/ so a rebuild only recompiles what changed. Needs: python3-torch,
libtorch-dev, ninja-build, g++ >= 12 — Debian packages only, no pip. Against a CUDA build of
torch (and nvcc), --cuda auto (the default) also compiles python/bld_torch_cuda.cu, which registers
bld's CUDA backend: the module's one loss path then runs bld's CUDA kernels on CUDA tensors, on
torch's current stream (BLD_TORCH_WITH_CUDA, defined for both compilers, lets bld/torch/loss.hpp
read it from c10/cuda).
"""

import argparse
import os
import pathlib
import shutil
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "build-py"),
                        help="output directory; the package lands in OUT/bld_torch (default: build-py)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    parser.add_argument("--debug", action="store_true", help="-O0 -g instead of -O3")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    parser.add_argument("--cuda", choices=("auto", "on", "off"), default="auto",
                        help="compile the CUDA dispatch (python/bld_torch_cuda.cu, nvcc): auto = when this "
                             "torch is a CUDA build (torch.version.cuda); Debian's torch is not")
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out).resolve()
    package = out / "bld_torch"
    build_dir = out / ".build"
    package.mkdir(parents=True, exist_ok=True)
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(args.jobs))

    import torch.utils.cpp_extension as cpp_extension  # noqa: E402 (after MAX_JOBS is set)

    import torch  # noqa: E402

    cuda = args.cuda == "on" or (args.cuda == "auto" and torch.version.cuda is not None)
    if cuda and torch.version.cuda is None:
        print("build_bld_torch: --cuda on needs a CUDA build of torch (torch.version.cuda is None)", file=sys.stderr)
        return 1
    opt = ["-O0", "-g"] if args.debug else ["-O3", "-DNDEBUG"]
    sources = [str(REPO / "python" / "bld_torch.cpp")]
    defines = []
    if cuda:
        sources.append(str(REPO / "python" / "bld_torch_cuda.cu"))
        defines.append("-DBLD_TORCH_WITH_CUDA")
    cpp_extension.load(
        name="_bld_torch",
        sources=sources,
        extra_include_paths=[str(REPO / "include"), str(REPO / "python")],
        extra_cflags=["-std=c++20", *opt, "-Wall", "-Wno-unused-parameter", *defines],
        extra_cuda_cflags=["-std=c++20", *opt, "--expt-relaxed-constexpr", *defines],
        extra_ldflags=["-lsimdjson"],  # bld::json (tokenizer loaders) for load_tokenizer
        build_directory=str(build_dir),
        with_cuda=cuda,
        is_python_module=True,
        verbose=args.verbose,
    )
    built = build_dir / "_bld_torch.so"
    if not built.is_file():
        print(f"build_bld_torch: expected {built} after the build", file=sys.stderr)
        return 1
    shutil.copy2(built, package / "_bld_torch.so")
    for source in (REPO / "python" / "bld_torch").glob("*.py"):
        shutil.copy2(source, package / source.name)
    print(f"bld_torch built{' with CUDA' if cuda else ''}: {package} (use PYTHONPATH={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
