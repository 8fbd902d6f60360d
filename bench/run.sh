#!/usr/bin/env bash
# Runs every benchmark; each prints Hearth's figure beside its named peer and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh >/dev/null
make -s build/hearth
python3 bench/serve.py "$@"
