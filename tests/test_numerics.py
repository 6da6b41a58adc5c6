"""The pinned numerical environment and the lock file (protoef.numerics, tools/requirements.py):
what a fresh process actually runs with, not what the module says it sets."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from protoef import numerics

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAS_AVX2 = (numerics.state()["cpu_flags"] or {}).get("avx2", False)


def fresh_python(code: str, **env) -> str:
    """Run `code` in a new interpreter with none of the pinned variables inherited."""
    result = subprocess.run([sys.executable, "-c", code], env=numerics.without_pin(os.environ) | env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not HAS_AVX2, reason="pinning caps the kernels at AVX2; this CPU has none")
def test_import_protoef_pins_the_kernels_and_threads_of_a_fresh_process():
    probe = "import protoef, torch; from protoef import numerics; s = numerics.state(); " \
            "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), s['effective'])"
    assert fresh_python(probe) == f"AVX2 {numerics.THREADS} True"
    # native: what torch picks on its own (no protoef at all) is what a native run gets.
    untouched = fresh_python("import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
    native = fresh_python("import protoef, torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())",
                          PROTOEF_NUMERICS="native")
    assert native == untouched


@pytest.mark.skipif(not HAS_AVX2, reason="needs a CPU with AVX2")
def test_the_shell_exports_pin_a_process_that_never_imports_protoef():
    # run_all.sh evals these lines; a papermill kernel or any subprocess then starts pinned.
    exports = fresh_python("from protoef import numerics; print(numerics.shell_exports().replace(chr(10), '; '))")
    script = f"{exports}; {sys.executable} -c 'import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())'"
    result = subprocess.run(["bash", "-c", script], env=numerics.without_pin(os.environ), capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["AVX2", str(numerics.THREADS)], result.stderr


def test_torch_running_before_protoef_is_reported_not_hidden():
    probe = ("import json, torch; torch.ones(4).sum(); import protoef; from protoef import numerics; "
             "print(json.dumps(numerics.state()))")
    state = json.loads(fresh_python(probe))
    if state["aten_cpu_capability"] == "AVX2":
        pytest.skip("this CPU's best ATen kernels are AVX2 already: nothing to detect")
    assert state["mode"] == "pinned" and state["effective"] is False
    assert any("torch ran before 'import protoef'" in problem for problem in state["problems"])


def test_an_unknown_mode_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(numerics.MODE_VARIABLE, "fast")
    with pytest.raises(ValueError, match="PROTOEF_NUMERICS='fast'.*'pinned'.*'native'"):
        numerics.mode()
    monkeypatch.setenv(numerics.MODE_VARIABLE, "Native")
    assert numerics.mode() == "native"


# ----------------------------------------------------------------------------- the lock file
def test_the_lock_is_read_and_compared_with_what_is_installed(tmp_path):
    import numpy

    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# a comment\n# lock-platform: cp399-plan9-mips\nNumPy=={numpy.__version__}\n"
                    "Scikit_Learn==0.0.1\nno-such-package==1.0\n")
    platform_tag, versions = numerics.read_lock(str(lock))
    assert platform_tag == "cp399-plan9-mips"
    assert versions == {"numpy": numpy.__version__, "scikit-learn": "0.0.1", "no-such-package": "1.0"}
    import sklearn

    differences = numerics.lock_differences(str(lock))
    assert differences["differs"] == {"scikit-learn": ["0.0.1", sklearn.__version__], "no-such-package": ["1.0", None]}
    assert numerics.lock_differences(str(tmp_path / "absent.lock")) is None
    lock.write_text("torch>=2.4\n")
    with pytest.raises(ValueError, match=r"requirements.lock:1: expected 'name==version', got 'torch>=2.4'"):
        numerics.read_lock(str(lock))


def load_requirements_tool():
    spec = importlib.util.spec_from_file_location("requirements_tool", ROOT / "tools" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_applies_on_its_own_platform_only(tmp_path, monkeypatch):
    tool = load_requirements_tool()
    lock = tmp_path / "requirements.lock"
    monkeypatch.setattr(tool, "LOCK", lock)
    lock.write_text(f"# lock-platform: {numerics.lock_platform()}\nnumpy==1.0\n")
    assert tool.lock_refusal() is None
    monkeypatch.setenv("PROTOEF_LOCK", "0")
    assert "PROTOEF_LOCK=0" in tool.lock_refusal()
    monkeypatch.delenv("PROTOEF_LOCK")
    lock.write_text("# lock-platform: cp399-plan9-mips\nnumpy==1.0\n")
    assert tool.lock_refusal().startswith("requirements.lock was made on cp399-plan9-mips, this is ")
    first = tool.stamp()
    lock.write_text("# lock-platform: cp399-plan9-mips\nnumpy==1.1\n")
    assert tool.stamp() != first  # a changed lock reinstalls ./.venv


def test_the_committed_lock_agrees_with_pyproject_and_environment_yml():
    from packaging.requirements import Requirement

    platform_tag, versions = numerics.read_lock()
    assert platform_tag and platform_tag.startswith("cp3")
    tool = load_requirements_tool()
    for text in tool.declared_requirements():
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in versions, f"{name} is declared in pyproject.toml but not locked"
        assert requirement.specifier.contains(versions[name], prereleases=True), (name, versions[name], str(requirement.specifier))
    assert "torch" in versions and "torchvision" in versions  # a matching pair, from one resolve
    environment = (ROOT / "environment.yml").read_text()
    python = platform_tag.split("-")[0][2:]
    assert f"python={python[0]}.{python[1:]}" in environment and "-r requirements.lock" in environment
