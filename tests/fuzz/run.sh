#!/usr/bin/env bash
# Builds each libFuzzer target (clang, ASan + UBSan) and runs it for FUZZ_SECONDS (default 10).
# Prints one "ok N - target" / "not ok N - target" line per target (TAP), so tests/run.sh can
# count them. Crash inputs are kept under build/fuzz/<target>/.
set -uo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-10}
CLANG=${CLANG:-clang}
if ! command -v "$CLANG" >/dev/null; then
    echo "ok 1 - fuzz # SKIP clang is not installed (scripts/deps.sh installs it)"
    exit 0
fi
PKGS="libmicrohttpd jansson sqlite3 libgit2 libcrypto libcurl libzstd liblz4 yaml-0.1 libpcre2-8 zlib libxxhash libutf8proc"
flags="-std=c17 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=address,undefined $(pkg-config --cflags $PKGS)"
libs="$(pkg-config --libs $PKGS) -lm -pthread"
# Each target names the modules it links in a line "// fuzz-modules: base http ...".
# Module objects are compiled once (incrementally) under build/fuzz/obj.
mkdir -p build/fuzz/obj
objects_for() {
    local objs="" m f o
    for m in $(grep -m1 -oE 'fuzz-modules:.*' "$1" | cut -d: -f2); do
        for f in src/$m/*.c; do
            o=build/fuzz/obj/$m-$(basename "$f" .c).o
            if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || [ -n "$(find src/$m -name '*.h' -newer "$o")" ]; then
                $CLANG $flags -fsanitize=fuzzer-no-link -c -o "$o" "$f" || return 1
            fi
            objs="$objs $o"
        done
    done
    echo "$objs"
}
n=0 rc=0
for target in tests/fuzz/fuzz_*.c; do
    name=$(basename "$target" .c)
    n=$((n + 1))
    bin=build/fuzz/$name
    objs=$(objects_for "$target" 2>build/fuzz/$name.build.log) &&
        [ -n "$objs" ] || { echo "not ok $n - $name (module build failed)"; tail -20 build/fuzz/$name.build.log; rc=1; continue; }
    if ! $CLANG $flags -fsanitize=fuzzer -o "$bin" "$target" $objs $libs 2>>build/fuzz/$name.build.log; then
        echo "not ok $n - $name (build failed)"; tail -20 build/fuzz/$name.build.log; rc=1; continue
    fi
    mkdir -p "build/fuzz/$name.corpus" "build/fuzz/$name.crashes"
    # Seeds kept in the repo (tests/fuzz/corpus/<target>: inputs that once found a bug) are
    # replayed first; a fixed seed keeps runs comparable from one CI run to the next.
    seeds=""
    [ -d "tests/fuzz/corpus/$name" ] && seeds="tests/fuzz/corpus/$name"
    # A fixed seed and a fixed number of runs make a CI run deterministic: the same inputs
    # every time for the same code, so it passes or fails for a reason. FUZZ_SECONDS instead
    # (make fuzz) explores for that long.
    if [ -n "${FUZZ_RUNS:-}" ]; then budget="-runs=$FUZZ_RUNS"; else budget="-max_total_time=$seconds"; fi
    if "$bin" -seed=1 $budget -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="build/fuzz/$name.crashes/" "build/fuzz/$name.corpus" $seeds \
        >build/fuzz/$name.log 2>&1; then
        echo "ok $n - $name ($(grep -oE 'stat::number_of_executed_units: *[0-9]+' build/fuzz/$name.log | grep -oE '[0-9]+$' || echo '?') runs)"
    else
        echo "not ok $n - $name"; tail -40 build/fuzz/$name.log; rc=1
    fi
done
exit $rc
