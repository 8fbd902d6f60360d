#!/usr/bin/env bash
# Installs everything Hearth needs to build and test, idempotently.
#   scripts/deps.sh          build + test dependencies (Debian packages, test virtualenv, npm clients)
#   scripts/deps.sh build    only what `make` needs
#   scripts/deps.sh bench    also the benchmark peers (nginx, fcgiwrap, wrk)
# Safe to run repeatedly: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}

build_pkgs=(build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev libgit2-dev
            libssl-dev libcurl4-openssl-dev libzstd-dev liblz4-dev libyaml-dev libmd4c-dev
            libpcre2-dev zlib1g-dev libxxhash-dev libutf8proc-dev git)
test_pkgs=(libcmocka-dev git-lfs curl python3-venv clang)
bench_pkgs=(nginx-light fcgiwrap wrk)

missing=()
want=("${build_pkgs[@]}")
[ "$what" = build ] || want+=("${test_pkgs[@]}")
[ "$what" = bench ] && want+=("${bench_pkgs[@]}")
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
[ "$what" = build ] && exit 0

# libFuzzer's runtime is only a recommendation of clang's package, which the line above skips.
rt="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
if ! dpkg-query -W -f='${Status}' "$rt" 2>/dev/null | grep -q "install ok installed" &&
   apt-cache show "$rt" >/dev/null 2>&1; then
    echo "deps: installing $rt" >&2
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$rt" >&2
fi

# Python test clients in a test-only virtualenv.
venv=tests/.venv
pyreqs=tests/e2e/requirements.txt
stamp=$venv/.installed
if [ ! -f "$stamp" ] || [ "$pyreqs" -nt "$stamp" ]; then
    echo "deps: preparing $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    "$venv/bin/pip" install -q -r "$pyreqs" >&2
    touch "$stamp"
fi

# npm test clients in tests/e2e/node_modules.
if [ ! -d tests/e2e/node_modules ] || [ tests/e2e/package.json -nt tests/e2e/node_modules ]; then
    echo "deps: npm install in tests/e2e" >&2
    (cd tests/e2e && npm install --no-audit --no-fund --loglevel=error >&2)
    touch tests/e2e/node_modules
fi
