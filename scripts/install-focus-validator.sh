#!/usr/bin/env bash
# Install the FinOps Foundation's FOCUS validator (focus-validator 2.2.1, which validates FOCUS 1.2 offline) into its
# own virtual environment, .focus-venv in the repository root, so its pinned dependencies never touch the project's
# .venv. Idempotent: an existing .focus-venv with the right version is left alone; any other .focus-venv (an older
# validator, a symlink to another checkout's) is replaced. Prints the validator's path.
#
# It needs Python 3.12 (>= 3.12, and numpy<2, which it asks for first, has no wheels for 3.13): FOCUS_PYTHON names
# the interpreter, else python3.12 on PATH, else the newest pyenv 3.12. It pins numpy<2, but the pyarrow it pulls in needs numpy>=2 (pip refuses the pair in one
# resolver run), so numpy>=2 is installed as a second step; the validator runs fine with it.
#   FOCUS_PYTHON=~/.pyenv/versions/3.12.1/bin/python3.12 scripts/install-focus-validator.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.focus-venv
VERSION=2.2.1
PIP=(--quiet --disable-pip-version-check)

new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
  local candidate root
  if [ -n "${FOCUS_PYTHON:-}" ]; then
    new_enough "$FOCUS_PYTHON" || { echo "FOCUS_PYTHON=$FOCUS_PYTHON is not Python >= 3.12" >&2; return 1; }
    echo "$FOCUS_PYTHON"
    return 0
  fi
  # A pyenv shim exists for every version pyenv has but runs only the active ones: try it, don't trust it.
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c '' >/dev/null 2>&1; then
    command -v python3.12
    return 0
  fi
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for candidate in $(ls -d "$root"/versions/3.12.* 2>/dev/null | sort -rV); do
    if [ -x "$candidate/bin/python3.12" ]; then
      echo "$candidate/bin/python3.12"
      return 0
    fi
  done
  echo "focus-validator $VERSION needs Python 3.12 and none was found; set FOCUS_PYTHON to one" >&2
  return 1
}

installed() {
  [ -x "$VENV/bin/focus-validator" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("focus-validator"))' 2>/dev/null)" = "$VERSION" ] &&
    "$VENV/bin/python" -c 'import numpy, pyarrow, focus_validator.main; assert int(numpy.__version__.split(".")[0]) >= 2' \
      >/dev/null 2>&1
}

if ! installed; then
  PYTHON=$(find_python)
  if [ -L "$VENV" ]; then
    rm "$VENV"  # a link to another checkout's validator: replace the link, never touch what it points at
  elif [ -e "$VENV" ] && [ "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" != \
    "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" ]; then
    rm -rf "$VENV"  # an environment on another Python (an older validator's): start afresh
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install "${PIP[@]}" "focus-validator==$VERSION"
  # Expected: pip reports that focus-validator requires numpy<2. The check below proves the pair works.
  "$VENV/bin/python" -m pip install "${PIP[@]}" 'numpy>=2' 2>&1 | grep -v "numpy<2\|dependency resolver" >&2 || true
  installed || { echo "focus-validator $VERSION did not install into $VENV" >&2; exit 1; }
fi
echo "$PWD/$VENV/bin/focus-validator"
