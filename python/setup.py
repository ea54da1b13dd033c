"""pip install for bld_torch, offline, against the torch already installed (Debian's python3-torch):

    python3 -m venv --system-site-packages V
    V/bin/pip install --no-build-isolation ./python

Builds the same extension as the developer route, python/build_bld_torch.py: bld_torch._bld_torch
from python/bld_torch.cpp with bld's headers (the checkout's include/, found next to this
directory), -std=c++20 -O3, linked with -lsimdjson; torch.utils.cpp_extension (ninja when
present) does the compiling. Against a CUDA build of torch with nvcc present it also compiles
python/bld_torch_cuda.cu with -DBLD_TORCH_WITH_CUDA, so the losses run bld's CUDA kernels on CUDA
tensors.

Builds from a checkout of the bld repository only (the headers live outside this directory; an
sdist would not carry them). Environment:

    BLD_TORCH_CUDA=auto|on|off   the CUDA dispatch (default auto: torch.version.cuda and nvcc)
    BLD_TORCH_BUILD_DIR=DIR      where the objects go (default python/build); a later install
                                 with the same DIR recompiles only what changed
    BLD_INCLUDE_DIR=DIR          bld's headers somewhere else than ../include
    MAX_JOBS=N                   parallel compile jobs (default 2)
"""

import os
import pathlib
import re
import shutil
import sys

from setuptools import setup

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def fail(message):
    sys.exit(f"bld_torch setup.py: {message}")


def read_version():
    path = HERE / "bld_torch" / "_version.py"
    match = re.search(r'^__version__ = "([^"]+)"$', path.read_text(encoding="utf-8"), re.M)
    if match is None:
        fail(f"no `__version__ = \"...\"` line in {path}")
    return match.group(1)


def include_dir():
    include = pathlib.Path(os.environ.get("BLD_INCLUDE_DIR", REPO / "include")).resolve()
    if not (include / "bld" / "bld.hpp").is_file():
        fail(f"bld's headers are not at {include} (no bld/bld.hpp): build from a checkout of the bld "
             f"repository (pip install ./python from its root), or set BLD_INCLUDE_DIR")
    return include


def want_cuda(torch, cpp_extension):
    mode = os.environ.get("BLD_TORCH_CUDA", "auto")
    if mode not in ("auto", "on", "off"):
        fail(f"BLD_TORCH_CUDA={mode!r}: expected auto, on or off")
    if mode == "off":
        return False
    nvcc = None
    if cpp_extension.CUDA_HOME is not None:
        candidate = pathlib.Path(cpp_extension.CUDA_HOME) / "bin" / "nvcc"
        nvcc = str(candidate) if candidate.is_file() else None
    nvcc = nvcc or shutil.which("nvcc")
    if torch.version.cuda is not None and nvcc is not None:
        return True
    if mode == "on":
        fail(f"BLD_TORCH_CUDA=on needs a CUDA build of torch (torch.version.cuda = {torch.version.cuda}) "
             f"and nvcc (found: {nvcc})")
    return False


def extension_and_command():
    os.environ.setdefault("MAX_JOBS", "2")
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as e:
        fail(f"needs torch at build time ({e}); with Debian's python3-torch use a venv made with "
             f"--system-site-packages and `pip install --no-build-isolation ./python`")
    include = include_dir()
    cuda = want_cuda(torch, cpp_extension)
    defines = ["-DBLD_TORCH_WITH_CUDA"] if cuda else []
    # Relative to HERE (setuptools wants relative sources; the build runs in this directory).
    sources = ["bld_torch.cpp"] + (["bld_torch_cuda.cu"] if cuda else [])
    # Headers are dependencies too: setuptools rebuilds when one is newer than the built module
    # (ninja then recompiles only the objects whose headers changed).
    depends = sorted(str(p) for p in include.rglob("*") if p.suffix in (".hpp", ".inc", ".cuh", ".h"))
    depends += [str(HERE / "bld_torch_cuda.hpp")]
    kind = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
    ext = kind(
        name="bld_torch._bld_torch",
        sources=sources,
        include_dirs=[str(include), str(HERE)],
        depends=depends,
        libraries=["simdjson"],  # bld::json (tokenizer loaders) for load_tokenizer
        extra_compile_args={
            "cxx": ["-std=c++20", "-O3", "-DNDEBUG", "-fno-wrapv", "-Wall", "-Wno-unused-parameter", *defines],
            "nvcc": ["-std=c++20", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", *defines],
        },
    )
    return ext, cpp_extension.BuildExtension


def main():
    os.chdir(HERE)
    ext, build_ext = extension_and_command()
    build_dir = pathlib.Path(os.environ.get("BLD_TORCH_BUILD_DIR", HERE / "build")).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    setup(
        name="bld_torch",
        version=read_version(),
        description="Byte-Level Distillation losses, targets and byte head for PyTorch (bld's C++ core)",
        license="MIT",
        python_requires=">=3.9",
        packages=["bld_torch"],
        ext_modules=[ext],
        cmdclass={"build_ext": build_ext},
        install_requires=["torch"],
        zip_safe=False,
        # Objects and metadata in one folder (git-ignored python/build by default), none in the tree.
        options={"build": {"build_base": str(build_dir)}, "egg_info": {"egg_base": str(build_dir)}},
    )


if __name__ == "__main__":
    main()
