"""Environment helper for run_all.sh: the dependency stamp, the lock file and a requirements check.

    python tools/requirements.py stamp         # a hash of the declared dependencies, the lock and its use
    python tools/requirements.py check         # exit 0 iff this interpreter satisfies pyproject.toml
    python tools/requirements.py lock-applies  # exit 0 iff ./.venv installs from requirements.lock
                                               #   (else prints why: another platform, PROTOEF_LOCK=0)
    python tools/requirements.py lock-diff     # one line: how the installed versions differ from the lock
    python tools/requirements.py lock          # rewrite requirements.lock from this environment

requirements.lock holds the exact versions behind the README's numbers (README, "Same
numbers on every machine"); pyproject.toml keeps the ranges, the fallback where the lock
cannot be installed. The lock is parsed by protoef/numerics.py, loaded here by path
because nothing may be installed yet.

Only the standard library and `packaging` (vendored by pip, present in every venv) are
used, so this runs before anything is installed.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata as metadata
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTRAS = ("dev",)
LOCK = ROOT / "requirements.lock"


@functools.lru_cache(maxsize=None)
def numerics():
    """protoef/numerics.py as a module of its own (not through the package, whose import
    needs torch): the lock file's one parser."""
    spec = importlib.util.spec_from_file_location("protoef_numerics", ROOT / "protoef" / "numerics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lock_refusal() -> str | None:
    """Why ./.venv is not installed from the lock (None: it is)."""
    if os.environ.get("PROTOEF_LOCK", "1") == "0":
        return "PROTOEF_LOCK=0: installing from pyproject.toml's ranges"
    if not LOCK.is_file():
        return f"{LOCK.name} not found: installing from pyproject.toml's ranges"
    made_on, _ = numerics().read_lock(str(LOCK))
    here = numerics().lock_platform()
    if made_on != here:
        return (f"{LOCK.name} was made on {made_on}, this is {here}: installing from pyproject.toml's ranges "
                "(the numbers may differ from the README's; environment.json records the versions)")
    return None


def declared_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in EXTRAS:
        requirements += project.get("optional-dependencies", {}).get(extra, [])
    return requirements


def stamp() -> str:
    # The interpreter's version is part of the stamp: a venv made by another Python must
    # be refreshed, not reused.
    # So is the lock and whether it applies: a changed lock, or PROTOEF_LOCK=0, reinstalls.
    lock = LOCK.read_text() if LOCK.is_file() else None
    payload = json.dumps({"python": sys.version.split()[0], "requirements": declared_requirements(),
                          "lock": lock, "from_lock": lock_refusal() is None})
    return hashlib.sha256(payload.encode()).hexdigest()


def unsatisfied() -> list[str]:
    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    problems = []
    for text in declared_requirements():
        requirement = Requirement(text)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement.name}: not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement.name}: {installed} does not satisfy {requirement.specifier}")
    # torch and torchvision must be a matching pair: a mismatched torchvision fails at import.
    probe = "import torch, torchvision, torchvision.ops; torchvision.ops.nms"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0:
        problems.append("torch/torchvision: the installed pair does not import together")
    probe = "import protoef"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, cwd="/").returncode != 0:
        problems.append("protoef: the package itself is not installed (pip install -e .)")
    return problems


def lock_summary() -> str:
    """One line: the installed versions against the lock."""
    differences = numerics().lock_differences(str(LOCK))
    if differences is None:
        return f"no {LOCK.name}"
    differs = differences["differs"]
    if not differs:
        return f"every package at its {LOCK.name} version"
    shown = ", ".join(f"{name} {locked} → {installed or 'absent'}" for name, (locked, installed) in sorted(differs.items())[:6])
    more = f" and {len(differs) - 6} more" if len(differs) > 6 else ""
    return f"{len(differs)} package(s) differ from {LOCK.name}: {shown}{more}"


def write_lock() -> None:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    pins = sorted((line for line in frozen if "==" in line and not line.lower().startswith("protoef")), key=str.lower)
    header = [
        "# Exact versions behind the README's numbers (README, \"Same numbers on every machine\").",
        "# ./run_all.sh installs them into ./.venv; pyproject.toml's ranges are the fallback where",
        "# this platform differs or the registry cannot serve a version (PROTOEF_LOCK=0 forces it).",
        "# Regenerate: python tools/requirements.py lock   (from a .venv that passes the test suite)",
        f"# lock-platform: {numerics().lock_platform()}",
    ]
    LOCK.write_text("\n".join(header + pins) + "\n")
    print(f"wrote {LOCK} ({len(pins)} packages)")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "stamp":
        print(stamp())
    elif command == "lock-applies":
        reason = lock_refusal()
        if reason:
            print(reason)
        sys.exit(1 if reason else 0)
    elif command == "lock-diff":
        print(lock_summary())
    elif command == "lock":
        write_lock()
    elif command == "check":
        problems = unsatisfied()
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    else:
        sys.exit(f"unknown command {command!r}: use stamp, check, lock-applies, lock-diff or lock")
