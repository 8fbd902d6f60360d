#!/usr/bin/env bash
# Runs Hearth's tests and ends with one summary line: "N passed, N failed[, N skipped]".
#   tests/run.sh            unit tests, then end-to-end tests
#   tests/run.sh unit       unit tests only
#   tests/run.sh e2e        end-to-end tests only
#   tests/run.sh fuzz       each libFuzzer target for FUZZ_RUNS inputs (default 100000, seed 1)
# Unit tests are the cmocka binaries under build/debug/tests (ASan + UBSan). End-to-end tests
# are pytest files (tests/e2e/test_*.py) and node test files (tests/e2e/*.test.mjs); each
# starts its own `build/debug/hearth serve` on a free loopback port.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
passed=0 failed=0 skipped=0
failures=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
log=build/test-logs
mkdir -p "$log"

count_tap() {   # file -> adds its TAP ok / not ok lines to the totals
    local f=$1 name=$2 p n s
    # cmocka writes a skipped test as "not ok N # SKIP": a skip, not a failure.
    p=$(grep -acE '^ *ok [0-9]+' "$f" | head -1)
    s=$(grep -acE '^ *ok [0-9]+.*# (SKIP|skip)' "$f" | head -1)
    ns=$(grep -acE '^ *not ok [0-9]+.*# (SKIP|skip)' "$f" | head -1)
    n=$(grep -acE '^ *not ok [0-9]+' "$f" | head -1)
    n=$((n - ns))
    passed=$((passed + p - s)); skipped=$((skipped + s + ns)); failed=$((failed + n))
    [ "$n" -eq 0 ] || failures+=("$name")
}

if [ "$what" = all ] || [ "$what" = unit ]; then
    for t in build/debug/tests/test_*; do
        [ -x "$t" ] || continue
        name=$(basename "$t")
        CMOCKA_MESSAGE_OUTPUT=TAP "$t" >"$log/$name.log" 2>&1
        rc=$?
        count_tap "$log/$name.log" "$name"
        if [ $rc -ne 0 ] && ! grep -qE '^ *not ok' "$log/$name.log"; then
            failed=$((failed + 1)); failures+=("$name (exit $rc)")
        fi
        echo "unit  $name: $(grep -acE '^ *ok ' "$log/$name.log") ok, $(grep -aE '^ *not ok ' "$log/$name.log" | grep -acvE '# (SKIP|skip)') failed"
        [ $rc -eq 0 ] || tail -n 40 "$log/$name.log"
    done
fi

if [ "$what" = all ] || [ "$what" = e2e ]; then
    if ls tests/e2e/test_*.py >/dev/null 2>&1; then
        tests/.venv/bin/python -m pytest -q -rfEs -p no:cacheprovider tests/e2e \
            --junitxml="$log/pytest.xml" 2>&1 | tee "$log/pytest.log"
        line=$(grep -aE '^(=+ )?[0-9]+ (passed|failed|error|skipped)' "$log/pytest.log" | tail -1)
        p=$(echo "$line" | grep -oE '[0-9]+ (passed|xpassed)' | awk '{s+=$1} END{print s+0}')
        f=$(echo "$line" | grep -oE '[0-9]+ (failed|error)' | awk '{s+=$1} END{print s+0}')
        s=$(echo "$line" | grep -oE '[0-9]+ (skipped|xfailed)' | awk '{s+=$1} END{print s+0}')
        [ -n "$line" ] || f=1
        passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
        [ "${f:-0}" -eq 0 ] || failures+=("pytest")
    fi
    for t in tests/e2e/*.test.mjs; do
        [ -f "$t" ] || continue
        name=$(basename "$t")
        node --test --test-reporter=tap "$t" >"$log/$name.log" 2>&1
        rc=$?
        count_tap "$log/$name.log" "$name"
        echo "e2e   $name: $(grep -acE '^ *ok ' "$log/$name.log") ok, $(grep -acE '^ *not ok ' "$log/$name.log") failed"
        [ $rc -eq 0 ] || { tail -n 60 "$log/$name.log"; grep -qE '^ *not ok' "$log/$name.log" || { failed=$((failed + 1)); failures+=("$name (exit $rc)"); }; }
    done
fi

if [ "$what" = all ] || [ "$what" = fuzz ]; then
    FUZZ_RUNS=${FUZZ_RUNS:-100000} tests/fuzz/run.sh >"$log/fuzz.log" 2>&1
    # the verdicts, and for a failure what the sanitizer or libFuzzer said (the CI log keeps them)
    grep -E '^(not )?ok |runtime error|ERROR: |SUMMARY: |^artifact_prefix|Test unit written' "$log/fuzz.log" |
        sed 's/^/fuzz  /'
    count_tap "$log/fuzz.log" fuzz
fi

[ ${#failures[@]} -eq 0 ] || echo "failing: ${failures[*]}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
