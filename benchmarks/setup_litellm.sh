#!/usr/bin/env bash
# Install the LiteLLM proxy in its own virtualenv, for benchmarks/gateway.py and benchmarks/faults.py.
#   bash benchmarks/setup_litellm.sh [VENV_DIR]     (default: .venv-litellm)
set -euo pipefail
venv="${1:-.venv-litellm}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet 'litellm[proxy]'
"$venv/bin/litellm" --version || true
echo "LiteLLM installed in $venv"
