"""Compiles the engine's C++ kernels into one shared library: `python -m engine.kernels.build [--force]`.

Plain g++ against the installed torch's headers and libraries (no ninja, no setuptools build), tuned for the machine
it runs on (-march=native): the library is built where it is used, by `make`, and is never committed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import time

from torch.utils import cpp_extension

from engine.kernels import BUILD_DIR, LIBRARY, SOURCES, is_current


def build(force: bool = False) -> bool:
    """Returns True when it compiled, False when the library was already current."""
    if is_current() and not force:
        return False
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{path}" for path in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    libs = [f"-L{path}" for path in cpp_extension.library_paths()]
    rpaths = [f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()]
    partial = LIBRARY.with_suffix(".so.partial")
    cmd = ["g++", "-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC", "-std=c++20", "-DNDEBUG",
           "-D_GLIBCXX_USE_CXX11_ABI=" + str(int(cpp_extension.torch._C._GLIBCXX_USE_CXX11_ABI)),
           *includes, *(str(src) for src in SOURCES), *libs, *rpaths, "-lc10", "-ltorch", "-ltorch_cpu",
           "-o", str(partial)]
    subprocess.run(cmd, check=True)
    partial.replace(LIBRARY)  # atomic: a process loading it never sees half a file
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="rebuild even when the library is current")
    args = parser.parse_args()
    started = time.monotonic()
    built = build(args.force)
    print(f"{'built' if built else 'up to date:'} {LIBRARY}" + (f" in {time.monotonic() - started:.1f} s"
                                                                 if built else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
