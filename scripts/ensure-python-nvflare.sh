#!/usr/bin/env bash
# Makes sure the Python environment for clients/python's tests exists: nvflare
# 2.9.0, nats-py and pytest in the project's virtual environment
# (scripts/ensure-python-venv.sh). Exports FLARE_PY_VENV (its directory; default
# ~/.cache/flare-launcher/venv, or as set beforehand).
#
#   bash scripts/ensure-python-nvflare.sh     # install/check
#   source scripts/ensure-python-nvflare.sh   # same, and export FLARE_PY_VENV
#
# Idempotent; quiet when everything is already there.

# shellcheck source=scripts/ensure-python-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/ensure-python-venv.sh"

_python_venv_install ensure-python-nvflare \
    'import importlib.metadata as m, nats, pytest; assert m.version("nvflare") == "2.9.0"' \
    'nvflare==2.9.0' 'nats-py>=2.9' 'pytest>=8'
