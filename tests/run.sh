#!/usr/bin/env bash
# Runs every test of tern and ends with one line "N passed, N failed, N skipped".
#
#  1. builds a release tree (build/) and an AddressSanitizer + UBSan tree
#     (build-asan/), and a libFuzzer tree with clang (build-fuzz/);
#  2. runs the C unit tests (cmocka, TAP output) in both trees;
#  3. runs the integration tests (pytest, real binary, real clients) against
#     both binaries, one pytest per file and binary, three at a time;
#  4. runs each fuzz target for a bounded time on its corpus.
#
# TERN_TEST_QUICK=1 skips the sanitizer pass of the integration tests;
# TERN_TEST_JOBS sets how many of their pytest runs go at once (3), and
# TERN_TEST_SERIAL=1 runs them one after the other.
# TERN_FUZZ_SECONDS bounds each fuzz run (default: 30 s for fuzz_http1, 15 s
# for fuzz_conf and fuzz_vrrp, 10 s for each other target; two run at once,
# about 75 s in all).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3 # Debian's, which has python3-pytest
passed=0 failed=0 skipped=0
failures=()

note_fail() {
    failed=$((failed + 1))
    failures+=("$1")
}

build_tree() { # dir, meson args...
    local dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || {
            cat "$dir.setup.log"
            return 1
        }
        rm -f "$dir.setup.log"
    fi
    ninja -C "$dir" >"$dir.log" 2>&1 || {
        tail -50 "$dir.log"
        return 1
    }
}

echo "== build (release, asan+ubsan)"
if ! build_tree build --buildtype=release; then
    echo "0 passed, 1 failed"
    exit 1
fi
asan_ok=1
build_tree build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false || asan_ok=0
[ $asan_ok = 1 ] || note_fail "build-asan"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export CMOCKA_MESSAGE_OUTPUT=TAP

run_unit() { # tree
    local tree=$1
    # Unit tests live next to what they test; each runs in the source folder
    # its meson test() names as workdir.
    for t in "$tree"/tests/test_* "$tree"/scale/test_* "$tree"/watch/test_*; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        local name out rc wd
        name="$(basename "$tree")/$(basename "$t")"
        case "$t" in
        */tests/test_*) wd=tests/unit ;;
        *) wd=$(basename "$(dirname "$t")") ;;
        esac
        out=$(cd "$wd" && "$ROOT/$t" 2>&1)
        rc=$?
        local ok nok
        ok=$(grep -c '^ok ' <<<"$out")
        nok=$(grep -c '^not ok ' <<<"$out")
        passed=$((passed + ok))
        failed=$((failed + nok))
        if [ "$nok" -gt 0 ] || { [ $rc -ne 0 ] && [ "$nok" -eq 0 ]; }; then
            echo "$out" | grep -v '^ok ' | tail -40
            [ "$nok" -gt 0 ] || note_fail "$name (exit $rc)"
            [ "$nok" -eq 0 ] || failures+=("$name")
        fi
        echo "unit $name: $ok passed, $nok failed"
    done
}

echo "== unit tests"
run_unit build
[ $asan_ok = 1 ] && run_unit build-asan

# The integration tests run one pytest per file and binary, several at a
# time (TERN_TEST_JOBS, 3 by default; TERN_TEST_SERIAL=1 runs them one after
# the other), each writing to its own file. The suite mostly waits
# (timeouts, intervals, processes starting): one pytest uses about a third
# of one core on average, so three keep 2 cores busy only in bursts. Every
# test gets its own ports, temporary files and network namespaces (named by
# pid), and bounds its timings with scaled(). Taking files from one queue,
# the runs share the time whatever each file and binary takes; the longest
# files go first so that none of them starts near the end.
pytest_file() { # tree, test file, outfile
    exec env TERN_BIN="$ROOT/$1/lb/tern" TERN_BUILD="$ROOT/$1" \
        "$PY" -m pytest -q -p no:cacheprovider -rfEs "$2" >"$3" 2>&1
}

# Adds one pytest run's counts to the totals; prints its failures whole
# (the last lines alone lose a CI failure's traceback) and its short summary
# (failures, skips and why).
tally_pytest() { # label, outfile
    local label=$1 out line
    out=$(cat "$2" 2>/dev/null)
    local tb n
    tb=$(awk '/^=+ (ERRORS|FAILURES) =+$/ { on = 1 }
              on && /^=+ / && !/^=+ (ERRORS|FAILURES) =+$/ { on = 0 }
              on' <<<"$out")
    if [ -n "$tb" ]; then
        n=$(wc -l <<<"$tb")
        head -600 <<<"$tb"
        [ "$n" -le 600 ] || echo "[... $((n - 600)) more lines of $label's failures cut ...]"
    fi
    line=$(grep -E '^[0-9]+ (passed|failed|skipped|error)|^=+ .*(passed|failed|skipped|error).* =+$|no tests ran' <<<"$out" | tail -1)
    local summary
    summary=$(sed -En '/^=+ short test summary info =+$/,$p' <<<"$out")
    if [ -n "$summary" ]; then
        tail -40 <<<"$summary"
    elif [ -z "$line" ]; then
        echo "$out" | tail -40
    fi
    local p f s e
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    passed=$((passed + p))
    failed=$((failed + f + e))
    skipped=$((skipped + s))
    tp=$((tp + p)) tf=$((tf + f + e)) ts=$((ts + s))
    [ $((f + e)) -eq 0 ] || failures+=("integration ($label)")
    if [ -z "$line" ]; then
        note_fail "integration ($label): pytest printed no summary"
        tf=$((tf + 1))
    fi
    # Seconds, for the list of the slowest files.
    file_secs+=("$(grep -oE ' in [0-9.]+s' <<<"$line" | grep -oE '[0-9.]+' || echo 0) $label")
}

logs=$(mktemp -d)
trees=(build)
if [ $asan_ok = 1 ] && [ -z "${TERN_TEST_QUICK:-}" ]; then
    trees=(build-asan build)
fi
# Known to be long (each over 20 s in one binary or the other), then the
# others by size.
files=()
for f in scale watch2 realvm reload2 chaos watch demo reload dashboard dns vrrp vrrp2 admin tls; do
    [ -f "tests/integration/test_$f.py" ] && files+=("tests/integration/test_$f.py")
done
while read -r f; do
    case " ${files[*]} " in *" $f "*) ;; *) files+=("$f") ;; esac
done < <(ls -S tests/integration/test_*.py)
queue=()
for f in "${files[@]}"; do
    for tree in "${trees[@]}"; do
        queue+=("$tree" "$f" "$logs/$tree.$(basename "$f" .py)")
    done
done
njobs=${TERN_TEST_JOBS:-3}
[ -z "${TERN_TEST_SERIAL:-}" ] || njobs=1
echo "== integration tests (${trees[*]}: ${#files[@]} files each, $njobs at a time)"
export -f pytest_file
export ROOT PY
printf '%s\n' "${queue[@]}" | xargs -P "$njobs" -n 3 bash -c 'pytest_file "$@"' _ &
xp=$!
trap 'pkill -TERM -P $xp; kill $xp 2>/dev/null' INT TERM
wait $xp
trap - INT TERM
for tree in "${trees[@]}"; do
    label=release
    [ "$tree" = build ] || label=asan
    echo "== integration tests ($label)"
    tp=0 tf=0 ts=0 file_secs=()
    for f in "${files[@]}"; do
        tally_pytest "$label $(basename "$f")" "$logs/$tree.$(basename "$f" .py)"
    done
    echo "integration $label: $tp passed, $tf failed, $ts skipped; slowest files: $(printf '%s\n' "${file_secs[@]}" |
        sort -rn | head -5 | awk '{ printf "%s%s %ss", (NR > 1 ? ", " : ""), $3, int($1) }')"
done
rm -rf "$logs"

echo "== format"
if command -v clang-format >/dev/null; then
    # The tree stays formatted with the project's .clang-format.
    if off=$(clang-format --dry-run -Werror $(git ls-files '*.c' '*.h' 2>/dev/null) 2>&1) &&
        [ -z "$off" ]; then
        passed=$((passed + 1))
        echo "format: every C file matches .clang-format"
    else
        echo "$off" | grep 'error:' | cut -d: -f1 | sort -u
        note_fail "format (make format fixes it)"
    fi
else
    skipped=$((skipped + 1))
    echo "format: skipped (no clang-format)"
fi

echo "== fuzz"
if command -v clang >/dev/null; then
    if CC=clang build_tree build-fuzz --buildtype=debug -Dfuzz=true \
        -Db_sanitize=address,undefined -Db_lundef=false; then
        # Two targets at a time, one per core: nothing timed runs meanwhile.
        names=() works=()
        for f in build-fuzz/tests/fuzz_*; do
            [ -f "$f" ] && [ -x "$f" ] || continue
            name=$(basename "$f")
            corpus=tests/fuzz/corpus/${name#fuzz_}
            case $name in
            fuzz_http1) secs=30 ;;
            fuzz_conf | fuzz_vrrp) secs=15 ;;
            *) secs=10 ;;
            esac
            dict=()
            [ -f "tests/fuzz/${name#fuzz_}.dict" ] && dict=(-dict="tests/fuzz/${name#fuzz_}.dict")
            work=$(mktemp -d)
            while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
            (
                TMPDIR="$work" "$f" -max_total_time="${TERN_FUZZ_SECONDS:-$secs}" -timeout=5 \
                    -rss_limit_mb=2048 "${dict[@]}" -artifact_prefix="$work/" "$work" "$corpus" \
                    >"$work/log" 2>&1
                echo $? >"$work/rc"
            ) &
            names+=("$name")
            works+=("$work")
        done
        wait
        for i in "${!names[@]}"; do
            name=${names[$i]} work=${works[$i]}
            if [ "$(cat "$work/rc" 2>/dev/null)" = 0 ]; then
                passed=$((passed + 1))
                echo "fuzz $name: $(grep -oE '#[0-9]+[[:space:]]+DONE.*' "$work/log" | tail -1)"
            else
                tail -30 "$work/log"
                note_fail "fuzz $name"
            fi
            rm -rf "$work"
        done
    else
        note_fail "build-fuzz"
    fi
else
    skipped=$((skipped + 1))
    echo "fuzz: skipped (no clang)"
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "failures:"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
