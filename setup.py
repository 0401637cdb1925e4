"""Build hook for the optional C++ kernel extension; metadata lives in pyproject.toml.

`pip install .` and `pip install -e .` run CMake on csrc/ to build
draftwise.runtime.kernels._qmm. If the build fails (no compiler, no CMake, an
mlx without its CMake files), the package still installs and runs on MLX's
own quantized matmul, and the build prints a warning saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
EXTENSION_NAME = "draftwise.runtime.kernels._qmm"


class CMakeExtension(Extension):
    """An extension whose sources are built by CMake from `source_dir`."""

    def __init__(self, name: str, source_dir: Path) -> None:
        super().__init__(name, sources=[])
        self.source_dir = source_dir


class CMakeBuild(build_ext):
    """Build CMake extensions; on failure, warn and install without them."""

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        try:
            self._build_cmake(ext)
        except (OSError, subprocess.CalledProcessError) as exc:
            _warn_without_kernel(f"{type(exc).__name__}: {exc}")

    def _build_cmake(self, ext: CMakeExtension) -> None:
        output = Path(self.get_ext_fullpath(ext.name)).resolve()
        # A module left from an earlier build must not ship if this one fails.
        output.unlink(missing_ok=True)
        build_temp = Path(self.build_temp).resolve() / "qmm"
        build_temp.mkdir(parents=True, exist_ok=True)
        # pip's isolated build environment moves on every install, so a cache
        # from an earlier one points at deleted paths: configure afresh.
        (build_temp / "CMakeCache.txt").unlink(missing_ok=True)
        configure = [
            "cmake",
            "-S",
            str(ext.source_dir),
            "-B",
            str(build_temp),
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={output.parent}",
        ]
        configure += os.environ.get("DRAFTWISE_CMAKE_ARGS", "").split()
        jobs = str(os.cpu_count() or 1)
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_temp), "-j", jobs], check=True)
        if not output.exists():
            raise OSError(f"CMake finished but did not produce {output}")


def _warn_without_kernel(reason: str) -> None:
    line = "=" * 72
    print(
        f"\n{line}\nWARNING: building the draftwise CPU kernel ({EXTENSION_NAME}) failed:\n"
        f"  {reason}\n"
        "draftwise installs without it and uses MLX's own quantized matmul, which is\n"
        "much slower on the CPU. Install a C++20 compiler and retry the install to\n"
        f"get the kernel.\n{line}\n",
        file=sys.stderr,
        flush=True,
    )


# The build environment needs libmlx.so and MLX's CMake files, which on Linux
# come in the mlx-cpu wheel, not in mlx itself. setuptools hands
# setup_requires to pip as extra build requirements (PEP 517
# get_requires_for_build_wheel).
LINUX_BUILD_REQUIRES = ["mlx-cpu==0.32.4"] if sys.platform.startswith("linux") else []

setup(
    setup_requires=LINUX_BUILD_REQUIRES,
    ext_modules=[CMakeExtension(EXTENSION_NAME, ROOT / "csrc")],
    cmdclass={"build_ext": CMakeBuild},
)
