"""Environment helper for run_all.sh: the dependency stamp and a requirements check.

    python tools/requirements.py stamp   # prints a hash of the declared dependencies
    python tools/requirements.py check   # exit 0 iff this interpreter satisfies them

Only the standard library and `packaging` (vendored by pip, present in every venv) are
used, so this runs before anything is installed.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import pathlib
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTRAS = ("dev",)


def declared_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in EXTRAS:
        requirements += project.get("optional-dependencies", {}).get(extra, [])
    return requirements


def stamp() -> str:
    # The interpreter's version is part of the stamp: a venv made by another Python must
    # be refreshed, not reused.
    payload = json.dumps({"python": sys.version.split()[0], "requirements": declared_requirements()})
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


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "stamp":
        print(stamp())
    elif command == "check":
        problems = unsatisfied()
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    else:
        sys.exit(f"unknown command {command!r}: use 'stamp' or 'check'")
