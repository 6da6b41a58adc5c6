"""Drift guard: every module, function and file that the docstrings and documents name exists.

Prose names code three ways: a dotted name (``protoef.training.runs.RunDir``), a short
``module.function`` in backticks (`runs.run_lock`) and a repository path
(``tests/test_reference_run.py``). Each is resolved against the code as it is now, so a
moved module or a renamed function fails here instead of misleading a reader.
"""
from __future__ import annotations

import importlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"\b((?:protoef|benchmarks)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
SHORT = re.compile(r"`([a-z_]+)\.([A-Za-z_][A-Za-z0-9_]*)`")
PATH = re.compile(r"\b((?:protoef|benchmarks|tests|tools|notebooks|docs|figures|\.ci)/[A-Za-z0-9_./-]*[A-Za-z0-9_])")
# Short names that are also config sections or run-directory keys in prose (`data.root`,
# `model.tau`, `metrics.json`, `push.fallbacks`): not module references.
NOT_MODULES = {"data", "model", "config", "metrics", "push", "loss", "optim", "protoef"}


def documents() -> list[pathlib.Path]:
    return [*ROOT.glob("protoef/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/*.py"),
            *ROOT.glob("notebooks/[0-9][0-9]_*.py"), ROOT / "README.md", ROOT / "benchmarks" / "README.md",
            *ROOT.glob("docs/*.md")]


def resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is an importable module, or attributes reached from the longest one."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def short_modules() -> dict[str, list[str]]:
    """``{"runs": ["protoef.training.runs"], ...}``: each package module by its last name part."""
    names: dict[str, list[str]] = {}
    for path in ROOT.glob("protoef/**/*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names.setdefault(dotted.rsplit(".", 1)[-1], []).append(dotted)
    return names


def broken_references(text: str, modules: dict[str, list[str]]) -> list[str]:
    broken = [name for name in (m.group(1).rstrip(".") for m in DOTTED.finditer(text))
              if not name.endswith((".py", ".md")) and not resolves(name)]
    for short, attribute in SHORT.findall(text):
        if short in modules and short not in NOT_MODULES and not any(
                hasattr(importlib.import_module(module), attribute) for module in modules[short]):
            broken.append(f"{short}.{attribute}")
    broken += [path for path in PATH.findall(text)
               if not any(mark in path for mark in "*<{") and "NN_" not in path and not (ROOT / path).exists()]
    return broken


def test_the_checker_finds_a_moved_module_a_renamed_function_and_a_missing_file():
    text = ("see `protoef.localization` and protoef.training.runs.no_such_name, "
            "`runs.read_config`, and tests/test_nothing_here.py; fine: `protoef.training.runs.RunDir`, "
            "`runs.run_lock`, `data.root`, tests/test_docs.py")
    assert sorted(broken_references(text, short_modules())) == sorted(
        ["protoef.localization", "protoef.training.runs.no_such_name", "runs.read_config", "tests/test_nothing_here.py"])


def test_every_code_reference_in_docstrings_and_documents_exists():
    modules = short_modules()
    broken = {str(path.relative_to(ROOT)): found for path in documents()
              if (found := sorted(set(broken_references(path.read_text(), modules))))}
    assert not broken, f"names that no longer exist (moved or renamed?): {broken}"
