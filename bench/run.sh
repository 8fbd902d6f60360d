#!/usr/bin/env bash
# Runs every benchmark; each prints Hearth's figure beside its named peer and the ratio.
# Not part of `make test`: timings are measured here, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench >/dev/null
make -s build/hearth
echo "== file serving (bench/serve.py): Hearth resolve vs nginx"
python3 bench/serve.py
echo "== git clone (bench/git_clone.py): Hearth smart HTTP vs git http-backend behind nginx"
python3 bench/git_clone.py
echo "== dedup store (bench/store.py): ingest vs openssl dgst, download from several packs vs nginx"
python3 bench/store.py
echo "== Xet (bench/xet.py): hf_xet vs the same client over LFS"
tests/.venv/bin/python bench/xet.py
echo "== inference (bench/infer_bench.py): hearth run vs llama.cpp (node-llama-cpp) on the same GGUFs"
tests/.venv/bin/python bench/infer_bench.py
