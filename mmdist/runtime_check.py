"""Do the installed CUDA builds of torch and DALI fit this machine's NVIDIA driver?

The default install is the CUDA 13 build of both (torch from PyPI, nvidia-dali-cuda130); a node
whose driver supports only CUDA 12 needs the CUDA 12 builds (``make CUDA=12``, README). With the
wrong build torch does not fail: ``torch.cuda.is_available()`` turns False with a warning, and
``engine.device=auto`` quietly trains on the CPU. ``build_mismatches()`` names the problem in one
line per library, to print at the start of a run, before the device is chosen.

A CUDA x.y build runs on any driver that supports CUDA x.0 or newer (CUDA's minor-version
compatibility), so only the major versions are compared.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import re
from typing import Optional

DALI_BUILDS = {"nvidia-dali-cuda120": 12, "nvidia-dali-cuda130": 13}
"""DALI's wheel names and the CUDA major version each is built for."""


def driver_cuda_version() -> Optional[tuple[int, int]]:
    """(major, minor) of the newest CUDA the installed driver supports (cuDriverGetVersion of
    libcuda); None without a driver (no GPU: nothing to match)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, (version.value % 1000) // 10


def installed_builds() -> dict[str, int]:
    """{library: CUDA major version it was built for} for torch and each DALI wheel installed;
    a CPU-only torch is left out."""
    import torch

    builds = {}
    if torch.version.cuda:
        builds[f"torch {torch.__version__}"] = int(torch.version.cuda.split(".")[0])
    for name, major in DALI_BUILDS.items():
        try:
            builds[f"{name} {importlib.metadata.version(name)}"] = major
        except importlib.metadata.PackageNotFoundError:
            pass
    return builds


def mismatch_lines(builds: dict[str, int], driver: Optional[tuple[int, int]]) -> list[str]:
    """One line per library whose CUDA build the driver cannot run, and one when two DALI
    builds are installed at once (they share the nvidia.dali module)."""
    lines = []
    dali = sorted(name for name in builds if name.startswith("nvidia-dali-"))
    if len(dali) > 1:
        lines.append(f"{' and '.join(dali)} are both installed and overwrite each other's "
                     "nvidia.dali: keep the one for this driver (README, Installing)")
    if driver is None:
        return lines
    for name, major in builds.items():
        if major > driver[0]:
            lines.append(f"{name} is a CUDA {major} build but the NVIDIA driver supports CUDA up "
                         f"to {driver[0]}.{driver[1]}: the GPU is unusable with it; install the "
                         f"CUDA {driver[0]} builds (make CUDA={driver[0]}, README, Installing) or "
                         "a newer driver")
    return lines


def build_mismatches() -> list[str]:
    """mismatch_lines for this machine (empty when everything fits, or without a driver)."""
    return mismatch_lines(installed_builds(), driver_cuda_version())
