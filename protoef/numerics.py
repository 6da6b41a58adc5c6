"""The pinned numerical environment: the same numbers on every x86-64 CPU (docs/method.md §6).

A CPU run's numbers depend on more than the seed. PyTorch picks its vectorised kernels
(ATen), oneDNN its convolution code and MKL its GEMM code by the instruction set of the
machine (AVX2, AVX-512, AMX), and the thread count decides how reductions are split: two
machines running the same commit, data and seed drift apart by float rounding, and a few
thousand optimiser steps turn that into different MAEs (issue #18 measured up to 0.66 MAE
per seed between an AVX-512 machine and another one). Pinning removes the machine from the
result:

- the kernel ISA of ATen, oneDNN and MKL is capped at AVX2 (every x86-64 CPU since 2013;
  MKL's conditional numerical reproducibility mode ``MKL_CBWR``);
- the intra-op thread count is fixed (``THREADS``), in torch, OpenMP, MKL and OpenBLAS;
- NumPy's OpenBLAS is pinned to its Haswell (AVX2) kernels;
- float32 matmuls stay IEEE float32 (no implicit bf16/TF32), and oneDNN runs its
  deterministic algorithms.

`pin_environment` applies this; ``import protoef`` calls it, so the command line, the
notebooks (papermill kernels), the test suite and any user script get it before torch
picks its kernels. ``PROTOEF_NUMERICS=native`` opts out (native ISA and thread count:
faster on a big or AVX-512 machine, but its numbers are that machine's). `state` is what
every run records in ``environment.json`` (``numerics``), including whether the pin took
effect (it cannot when torch ran kernels before ``import protoef``).

This module imports no third-party package at import time: it must run before torch.
"""
from __future__ import annotations

import os
import sys

__all__ = ["MODE_VARIABLE", "THREADS", "PINNED_VARIABLES", "LOCK_FILE", "mode", "pin_environment", "state", "shell_exports",
           "read_lock", "lock_platform", "lock_differences", "without_pin"]

MODE_VARIABLE = "PROTOEF_NUMERICS"  # "pinned" (default) or "native"
THREADS = 2  # the reference machines' core count; a fixed count keeps reduction order fixed
PINNED_VARIABLES = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels (read at torch's first dispatch)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN convolutions (read at its first primitive)
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same, older oneDNN releases' name
    "MKL_CBWR": "AVX2",  # MKL GEMM: conditional numerical reproducibility, AVX2 code path
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy's OpenBLAS (synthetic data, t-SNE, UMAP)
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "OPENBLAS_NUM_THREADS": str(THREADS),
}


def mode() -> str:
    """``"pinned"`` unless ``PROTOEF_NUMERICS=native``; any other value is an error."""
    value = os.environ.get(MODE_VARIABLE, "pinned").strip().lower() or "pinned"
    if value not in ("pinned", "native"):
        raise ValueError(f"{MODE_VARIABLE}={value!r}: expected 'pinned' (the default: the same numbers on every "
                         "x86-64 CPU) or 'native' (this machine's fastest kernels and threads)")
    return value


def pin_environment() -> None:
    """Set the pinned variables (overriding what the shell set: a pin that yields to any
    exported variable pins nothing) and, once torch is importable, its thread count and
    precision flags. A no-op with ``PROTOEF_NUMERICS=native``."""
    if mode() == "native":
        return
    os.environ.update(PINNED_VARIABLES)
    try:
        import torch
    except ImportError:  # the environment check runs before anything is installed
        return
    torch.set_num_threads(THREADS)
    torch.set_float32_matmul_precision("highest")
    if hasattr(torch.backends.mkldnn, "deterministic"):
        torch.backends.mkldnn.deterministic = True


def state() -> dict:
    """What ``environment.json`` records: the mode, every pinned variable's value in this
    process, and what torch actually uses. ``effective`` is False (with ``problems``) when
    pinned mode asked for something the process does not have, e.g. torch dispatched
    AVX-512 kernels before protoef was imported, or a CPU without AVX2."""
    import torch

    current = mode()
    record = {
        "mode": current,
        "variables": {name: os.environ.get(name) for name in PINNED_VARIABLES},
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn_deterministic": getattr(torch.backends.mkldnn, "deterministic", None),
        "machine": _cpu_model(),
        "cpu_flags": _cpu_flags(("avx2", "avx512f", "avx512_bf16", "amx_bf16")),
    }
    problems = []
    if current == "pinned":
        if record["aten_cpu_capability"] != "AVX2":
            problems.append(f"ATen uses {record['aten_cpu_capability']} kernels, not AVX2 (torch ran before "
                            "'import protoef', or this CPU lacks AVX2)")
        if record["torch_threads"] != THREADS:
            problems.append(f"torch uses {record['torch_threads']} threads, not {THREADS}")
        if any(os.environ.get(name) != value for name, value in PINNED_VARIABLES.items()):
            problems.append("a pinned environment variable was changed after import protoef")
    record["effective"] = current == "pinned" and not problems
    record["problems"] = problems
    return record


def without_pin(environ) -> dict:
    """A copy of `environ` with none of the pinned variables and no mode: what a child
    process needs to run natively even when this one (after ``import protoef``) is pinned."""
    return {name: value for name, value in environ.items() if name not in PINNED_VARIABLES and name != MODE_VARIABLE}


def shell_exports() -> str:
    """``export NAME=value`` lines for run_all.sh, so that every process it starts (papermill
    kernels, pytest, subprocesses) is pinned before its first import."""
    if mode() == "native":
        return f"export {MODE_VARIABLE}=native"
    lines = [f"export {MODE_VARIABLE}=pinned"] + [f"export {name}={value}" for name, value in PINNED_VARIABLES.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the lock file
# requirements.lock (repository root) holds the exact versions behind the README's numbers;
# tools/requirements.py installs from it and loads this file by path (before anything is
# installed), so the lock is parsed in one place. Its header names the platform it fits:
#     # lock-platform: cp311-linux-x86_64
LOCK_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.lock")


def lock_platform() -> str:
    """This interpreter's platform in the lock header's spelling, e.g. ``cp311-linux-x86_64``."""
    import platform

    return f"cp{sys.version_info.major}{sys.version_info.minor}-{sys.platform}-{platform.machine().lower()}"


def read_lock(path: str = LOCK_FILE) -> tuple[str | None, dict[str, str]]:
    """(the platform the lock was made on, {normalised package name: exact version})."""
    platform_tag, versions = None, {}
    with open(path) as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if line.startswith("# lock-platform:"):
                platform_tag = line.split(":", 1)[1].strip()
            if not line or line.startswith("#"):
                continue
            name, separator, version = line.partition("==")
            if not separator or not name.strip() or not version.strip():
                raise ValueError(f"{path}:{number}: expected 'name==version', got {line!r}; regenerate the lock "
                                 "with 'python tools/requirements.py lock'")
            versions[_normalise(name)] = version.strip()
    return platform_tag, versions


def lock_differences(path: str = LOCK_FILE) -> dict | None:
    """How this environment differs from the lock: ``{"platform": ..., "differs": {name:
    [locked, installed or None]}}``; None without a lock file (a non-editable install)."""
    import importlib.metadata as metadata

    if not os.path.isfile(path):
        return None
    platform_tag, versions = read_lock(path)
    differs = {}
    for name, locked in versions.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != locked:
            differs[name] = [locked, installed]
    return {"platform": platform_tag, "this_platform": lock_platform(), "differs": differs}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or None


def _cpu_flags(names) -> dict[str, bool] | None:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return None
    return {name: name in flags for name in names}

