#!/usr/bin/env bash
# CI: the package as users without the checkout get it. Builds a wheel of the working tree,
# installs it (not editable) into a fresh virtual environment with the pinned stack, and trains
# HyMoERec on ml-100k for one epoch from a folder outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Build from a copy of the files git knows (tracked and not ignored): no stale build/ folder of
# the checkout can leak into the wheel.
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$WORK/src"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/recbole_hymoe-*.whl)"
VENV="$WORK/venv" PACKAGE="$WHEEL" bash run/setup_env.sh
mkdir "$WORK/elsewhere" && cd "$WORK/elsewhere"
"$WORK/venv/bin/run_recbole" --model=HyMoERec --dataset=ml-100k --epochs=1 | tee run.log
grep -q "| test |" run.log
