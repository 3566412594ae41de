#!/usr/bin/env bash
# Coverage-guided fuzzing with atheris: `bash tests/fuzz/run.sh [SECONDS]` (default 60 each).
# tests/run.sh runs it with 60 s per target; run it by hand for as long as you like. A crash
# leaves its input as crash-*; turn it into a regular test in tests/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-60}
PYTHON=${AWGD_FUZZ_PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for target in fuzz_dump_parser fuzz_uapi_parser fuzz_protocol; do
    mkdir -p "$WORK/$target"
    cp tests/data/*.out tests/data/*.uapi "$WORK/$target/" 2>/dev/null || true
    printf '=== fuzz %s for %s s\n' "$target" "$SECONDS_EACH"
    (cd "$WORK" && "$OLDPWD/$PYTHON" "$OLDPWD/tests/fuzz/$target.py" -max_total_time="$SECONDS_EACH" \
        -rss_limit_mb=2048 -print_final_stats=1 "$WORK/$target" 2>&1 | tail -12)
    if ls "$WORK"/crash-* >/dev/null 2>&1; then
        echo "fuzz: $target found a crash:" >&2
        ls "$WORK"/crash-* >&2
        exit 1
    fi
done
