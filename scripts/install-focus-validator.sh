#!/usr/bin/env bash
# Install the FinOps Foundation's FOCUS validator (1.0.0, which validates FOCUS 1.0) into its own virtual
# environment, .focus-venv in the repository root, so its pinned dependencies never touch the project's .venv.
# Idempotent: an existing .focus-venv with the right version is left alone. Prints the validator's path.
#   PYTHON=python3.11 scripts/install-focus-validator.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.focus-venv
VERSION=1.0.0

installed() {
  [ -x "$VENV/bin/focus-validator" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("focus-validator"))' 2>/dev/null)" = "$VERSION" ] &&
    "$VENV/bin/python" -c 'import focus_validator.main' >/dev/null 2>&1
}

if ! installed; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "focus-validator==$VERSION" 'multimethod<2'
  installed || { echo "focus-validator $VERSION did not install into $VENV" >&2; exit 1; }
fi
echo "$PWD/$VENV/bin/focus-validator"
