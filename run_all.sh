#!/usr/bin/env bash
# ProtoEFNet companion: one command for the whole job, one for the tests.
#
#   ./run_all.sh [--profile demo|smoke|paper] [--data DIR] [--only 01,03] [--force]
#       set up ./.venv if needed, run every notebook for the profile (papermill, from its
#       source notebooks/NN_name.py), then collect the notebooks' claim checks into
#       figures[/<profile>]/results.md (demo: also the README's results block) and keep the
#       executed demo notebooks in notebooks/NN_name.ipynb
#   ./run_all.sh --test [PYTEST_ARGS...]
#       set up ./.venv if needed, then run the test suite (what CI runs)
#
# Profiles: demo (default) uses the embedded synthetic EchoNet-format data set on the CPU;
# smoke is a seconds-long version of it; paper uses EchoNet-Dynamic (--data DIR or
# ECHONET_DIR) and is meant for a GPU.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

mode=run
profile=demo
data_dir="${ECHONET_DIR:-}"
force=0
data_given=0
only=""
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --test) mode=test; shift; pytest_args=("$@"); break ;;
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        --data) data_dir="${2:?--data needs a directory}"; data_given=1; shift 2 ;;
        --data=*) data_dir="${1#*=}"; data_given=1; shift ;;
        --force) force=1; shift ;;
        --only) only="${2:?--only needs notebook numbers, e.g. 02,04}"; shift 2 ;;
        --only=*) only="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$mode" = run ]; then
    if [ "$data_given" = 1 ] && [ "$profile" != paper ]; then
        echo "run_all.sh: --data is used by --profile paper only; the $profile profile trains on its synthetic set" \
             "(drop --data, or pass --profile paper)" >&2
        exit 2
    fi
    if [ "$data_given" = 1 ] && [ -z "$data_dir" ]; then
        echo "run_all.sh: --data is empty; give the EchoNet-Dynamic folder (the one with FileList.csv)" >&2
        exit 2
    fi
    # Every number given to --only must name a notebook: otherwise nothing would run.
    if [ -n "$only" ]; then
        IFS=',' read -ra wanted <<< "$only"
        for number in "${wanted[@]}"; do
            matches=("$ROOT"/notebooks/"$number"_*.py)
            if [ -z "$number" ] || [ ! -e "${matches[0]}" ]; then
                available="$(cd "$ROOT/notebooks" && ls [0-9][0-9]_*.py | cut -c1-2 | paste -sd, -)"
                echo "run_all.sh: --only $only: no notebook numbered '$number' in notebooks/ (available: $available)" >&2
                exit 2
            fi
        done
    fi
fi

# shellcheck source=tools/env.sh
source "$ROOT/tools/env.sh"
protoef_ensure_env
protoef_export_numerics

if [ "$mode" = test ]; then
    exec "$PYTHON" -m pytest "${pytest_args[@]}"
fi

case "$profile" in
    demo|smoke) ;;
    paper)
        if [ -z "$data_dir" ]; then
            echo "run_all.sh: --profile paper needs EchoNet-Dynamic: pass --data DIR or set ECHONET_DIR" >&2
            exit 2
        fi ;;
    *) echo "run_all.sh: unknown profile '$profile' (demo, smoke or paper)" >&2; exit 2 ;;
esac

started=$SECONDS
cache="${PROTOEF_CACHE:-$ROOT/.cache}"
if [ "$profile" != paper ]; then
    # The profile's config says which synthetic set it uses (size, seed, split); ask it
    # rather than spelling the folder name here a second time.
    data_dir="$(PROTOEF_CACHE="$cache" "$PYTHON" -c 'import sys; from protoef.companion import notebook
from protoef.training.build import synthetic_root
print(synthetic_root(notebook.config_for(sys.argv[1])))' "$profile")"
    if [ "$force" = 1 ] || [ ! -f "$data_dir/FileList.csv" ]; then
        rm -rf "$data_dir"
        PROTOEF_CACHE="$cache" "$PYTHON" -c 'import sys; from protoef.companion import notebook
notebook.dataset_root(sys.argv[1])' "$profile"  # generates it (progress bar)
    else
        echo "[run_all] synthetic data set present: $data_dir (use --force to regenerate)"
    fi
fi
# Every split must load; a video that cannot be used is named with its reason.
"$PYTHON" -m protoef check-data "$data_dir"

# Every notebook in order, executed by papermill. Its source is notebooks/NN_name.py
# (jupytext's percent format: code and markdown only, what a review reads); it is built into
# an unexecuted .ipynb in the staging folder and never written to (tools/notebooks.py).
# The profile travels as PROTOEF_PROFILE,
# which each notebook's parameters cell reads, not as an injected parameter: the executed
# demo notebooks are stored back in notebooks/ (what a reader sees without running
# anything), and an injected cell there would pin CI's nbval run to the demo profile.
# The notebooks train what they need through protoef.companion.notebook.ensure_run, which
# reuses a finished run and resumes an interrupted one; --force retrains from scratch.
[ "$force" = 1 ] && rm -rf "$ROOT/runs/$profile"-* "$cache/warmstart"
if [ "$profile" = demo ]; then executed="$ROOT/notebooks"; else executed="$ROOT/runs/$profile/notebooks"; fi
staging="$ROOT/runs/$profile/executing"
mkdir -p "$executed" "$staging"
params=()
[ "$profile" = paper ] && params+=(-p data "$data_dir")
for source in "$ROOT"/notebooks/[0-9][0-9]_*.py; do
    name="$(basename "$source" .py)"
    if [ -n "$only" ] && [[ ",$only," != *",${name:0:2},"* ]]; then
        continue
    fi
    echo "[run_all] $name (profile $profile)"
    nb_started=$SECONDS
    "$PYTHON" "$ROOT/tools/notebooks.py" build "$source" "$staging/$name.source.ipynb"
    if ! PROTOEF_CACHE="$cache" PROTOEF_PROFILE="$profile" "$PYTHON" -m papermill "$staging/$name.source.ipynb" "$staging/$name.ipynb" \
            ${params[@]+"${params[@]}"} --cwd "$ROOT/notebooks" --kernel python3 --no-progress-bar --log-level WARNING; then
        echo "[run_all] $name FAILED: the failing cell and its traceback are above;" \
             "the executed notebook is $staging/$name.ipynb" >&2
        exit 1
    fi
    # Progress widgets out (they only work in a live kernel), then replace the stored notebook:
    # only a notebook that ran through does.
    "$PYTHON" -c 'import sys; from protoef.companion import notebook; notebook.tidy_executed(sys.argv[1])' "$staging/$name.ipynb"
    mv "$staging/$name.ipynb" "$executed/$name.ipynb"
    echo "[run_all] $name done in $((SECONDS - nb_started)) s"
done
# The results block: every notebook's claim check, collected; nothing typed by hand.
readme=(); [ "$profile" = demo ] && readme=(--readme "$ROOT/README.md")
"$PYTHON" -m protoef.companion.claims --profile "$profile" ${readme[@]+"${readme[@]}"}
figures="figures"; [ "$profile" != demo ] && figures="figures/$profile"
echo "[run_all] profile '$profile' done in $((SECONDS - started)) s; figures and results.md in $figures/," \
     "executed notebooks in ${executed#"$ROOT"/}"
