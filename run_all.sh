#!/usr/bin/env bash
# ProtoEFNet companion: one command for the whole job, one for the tests.
#
#   ./run_all.sh [--profile demo|smoke|paper] [--data DIR] [--force]
#       set up ./.venv if needed, then run the reproduction for the profile
#   ./run_all.sh --test [PYTEST_ARGS...]
#       set up ./.venv if needed, then run the test suite (what CI runs)
#
# Profiles: demo (default) uses the embedded synthetic EchoNet-format data set on the CPU;
# smoke is a seconds-long version of it; paper uses EchoNet-Dynamic (--data DIR or
# ECHONET_DIR) and is meant for a GPU.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(pwd)"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

mode=run
profile=demo
data_dir="${ECHONET_DIR:-}"
force=0
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --test) mode=test; shift; pytest_args=("$@"); break ;;
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        --data) data_dir="${2:?--data needs a directory}"; shift 2 ;;
        --data=*) data_dir="${1#*=}"; shift ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

# shellcheck source=tools/env.sh
source "$ROOT/tools/env.sh"
protoef_ensure_env

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
data_args=()
if [ "$profile" = paper ]; then
    data_args=(--data "$data_dir")
else
    videos=400; [ "$profile" = smoke ] && videos=24
    data_dir="$cache/synthetic-${videos}-seed0"
    if [ "$force" = 1 ] || [ ! -f "$data_dir/FileList.csv" ]; then
        "$PYTHON" -m protoef synth "$data_dir" --videos "$videos" --seed 0
    else
        echo "[run_all] synthetic data set present: $data_dir (use --force to regenerate)"
    fi
fi
# Every split must load; a video that cannot be used is named with its reason.
"$PYTHON" -m protoef check-data "$data_dir"

# ProtoEFNet and its black-box counterpart with the same budget. Finished runs (their
# metrics.json exists) are kept unless --force; an interrupted one resumes.
for kind in protoefnet blackbox; do
    run="$ROOT/runs/$profile-$kind"
    [ "$force" = 1 ] && rm -rf "$run"
    if [ -f "$run/metrics.json" ]; then
        echo "[run_all] $run finished already (use --force to redo)"
        continue
    fi
    resume=(); [ -f "$run/checkpoints/last.pt" ] && resume=(--resume)
    "$PYTHON" -m protoef train --profile "$profile" --set "model.kind=$kind" \
        --set "data.cache_dir=$cache" "${data_args[@]}" --out "$run" "${resume[@]}"
done
"$PYTHON" - "$ROOT/runs/$profile" <<'PY'
import json, sys
print(f"{'model':12s} {'MAE':>6s} {'RMSE':>6s} {'R²':>6s} {'F1<40':>6s}")
for kind in ("protoefnet", "blackbox"):
    test = json.load(open(f"{sys.argv[1]}-{kind}/metrics.json"))["test"]
    m = test.get("post_push", test.get("final"))
    print(f"{kind:12s} {m['mae']:6.2f} {m['rmse']:6.2f} {m['r2']:6.3f} {m['f1_40'] if m['f1_40'] is not None else float('nan'):6.3f}")
PY
echo "[run_all] profile '$profile' done in $((SECONDS - started)) s"
