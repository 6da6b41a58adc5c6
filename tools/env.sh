# shellcheck shell=bash
# Sourced by run_all.sh and .ci/run: sets PYTHON to an interpreter that satisfies
# pyproject.toml, creating or refreshing ./.venv when needed, and exports the pinned
# numerical environment (protoef.numerics) for every process started after it.
#
# - ./.venv is installed from requirements.lock (the exact versions behind the README's
#   numbers) when the lock was made on this platform; otherwise, or when the registry cannot
#   serve a locked version, or with PROTOEF_LOCK=0, from pyproject.toml's ranges, said in one
#   line (every run's environment.json records how its versions differ from the lock).
# - An environment the user activated (venv or conda) is used as it is when it already
#   satisfies the requirements; otherwise ./.venv is used.
# - ./.venv carries a stamp of the declared dependencies (and the Python version); when the
#   stamp matches, nothing is installed and this takes about a second.
# - PROTOEF_PYTHON picks the interpreter that creates ./.venv (default: python3).

protoef_ensure_env() {
    local root venv stamp_file want_stamp base_python active
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="$root/.venv"
    stamp_file="$venv/.protoef-deps-stamp"

    active="${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
    if [ -n "$active" ] && [ "$active" != "$venv" ] && command -v python >/dev/null 2>&1; then
        if python "$root/tools/requirements.py" check 2>/dev/null; then
            PYTHON="$(command -v python)"
            echo "[env] using the active environment $active"
            return 0
        fi
        echo "[env] the active environment $active lacks requirements; using $venv instead"
    fi

    base_python="${PROTOEF_PYTHON:-python3}"
    if ! command -v "$base_python" >/dev/null 2>&1; then
        echo "[env] error: $base_python not found; install Python >= 3.10 or set PROTOEF_PYTHON" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "[env] creating $venv with $($base_python --version 2>&1)"
        "$base_python" -m venv "$venv" || return 1
    fi
    want_stamp="$("$venv/bin/python" "$root/tools/requirements.py" stamp)" || return 1
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
        PYTHON="$venv/bin/python"
        return 0
    fi
    echo "[env] installing dependencies into $venv (first run, or pyproject.toml or requirements.lock changed)"
    local started=$SECONDS refusal
    "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel || return 1
    if refusal="$("$venv/bin/python" "$root/tools/requirements.py" lock-applies)"; then
        if ! { "$venv/bin/python" -m pip install --quiet -r "$root/requirements.lock" &&
               "$venv/bin/python" -m pip install --quiet --no-deps -e "$root"; }; then
            refusal="pip could not install requirements.lock (above); installing from pyproject.toml's ranges"
        fi
    fi
    if [ -n "$refusal" ]; then
        echo "[env] $refusal"
        "$venv/bin/python" -m pip install --quiet -e "$root[dev]" || {
            echo "[env] error: pip could not install the requirements of $root/pyproject.toml" >&2
            return 1
        }
    fi
    if ! "$venv/bin/python" "$root/tools/requirements.py" check; then
        echo "[env] error: $venv does not satisfy pyproject.toml after installing (see above)" >&2
        return 1
    fi
    "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
    echo "$want_stamp" > "$stamp_file"
    echo "[env] ready in $((SECONDS - started)) s: $("$venv/bin/python" -c 'import torch, torchvision; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")'); $("$venv/bin/python" "$root/tools/requirements.py" lock-diff)"
    PYTHON="$venv/bin/python"
}

# The pinned numerical environment (protoef.numerics) as exported variables, so papermill
# kernels, pytest and every subprocess start pinned; PROTOEF_NUMERICS=native opts out.
protoef_export_numerics() {
    local exports
    exports="$("$PYTHON" -c 'from protoef import numerics; print(numerics.shell_exports())')" || return 1
    eval "$exports"
    echo "[env] numerics: ${PROTOEF_NUMERICS} (PROTOEF_NUMERICS=native for this machine's own kernels and threads)"
}
