#!/usr/bin/env bash
# Create the project's virtualenv; on Debian the venv module ships separately (python3-venv).
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ -x "$venv/bin/python" ]; then exit 0; fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "Python's venv module is missing. Run: sudo apt-get install -y python3-venv" >&2
        exit 1
    fi
fi
"$python" -m venv "$venv"
