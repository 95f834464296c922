#!/usr/bin/env bash
# Create .venv with the pinned stack and install recbole-hymoe into it (editable).
# RecBole 1.2.1 goes in with --no-deps: its metadata pins ray<=2.6.3 (dead on numpy 2), so its
# real runtime dependencies are pinned in requirements.txt instead.
# VENV=<folder> picks another environment; PACKAGE=<wheel file> installs a built wheel instead
# of the editable checkout (.ci/check_wheel.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet "torch==2.13.0"            # CPU wheel where one is provided; CUDA users: install their torch build first
$PIP install --quiet -r requirements.txt
$PIP install --quiet --no-deps "recbole==1.2.1"
if [ -n "${PACKAGE:-}" ]; then
    $PIP install --quiet --no-deps --force-reinstall "$PACKAGE"
else
    $PIP install --quiet --no-deps -e .
fi
# Compile the CPU selective-scan kernels once (cached on disk), so no run pays for it later.
# From inside the environment's folder: the checkout's own recbole_hymoe/ must not shadow an installed wheel.
VENV_PYTHON="$(cd "$VENV" && pwd)/bin/python"
(cd "$VENV" && "$VENV_PYTHON" -c "import recbole_hymoe, recbole; from recbole_hymoe.nn.scan import warm_up; warm_up(); print('recbole-hymoe', recbole_hymoe.__version__, 'on recbole', recbole.__version__)")
