#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target and runs each for a bounded
# time, failing on any crash, leak or timeout that libFuzzer reports.
#
#   bash fuzz/run-smoke.sh [SECONDS_PER_TARGET]    (default 60)
#
# Needs a nightly toolchain (`cargo +nightly`); without one it says so and
# exits 0. Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) if it is
# missing. The committed corpus under fuzz/corpus/<target>/ is only read: new
# inputs go to a scratch directory that is deleted afterwards. A crashing
# input is kept under fuzz/artifacts/<target>/ (ignored by git) and the
# command to reproduce it is printed.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped, no nightly toolchain (cargo +nightly) on this machine"
    exit 0
fi
echo "fuzz smoke: $(cargo +nightly --version)"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
echo "fuzz smoke: $(cargo +nightly fuzz --version)"

targets=()
while IFS= read -r target; do
    targets+=("$target")
done < <(cargo +nightly fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz smoke: no fuzz targets found" >&2
    exit 1
fi

echo "fuzz smoke: building ${targets[*]}"
cargo +nightly fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$here/corpus/$target"
    work="$scratch/corpus-$target"
    artifacts="$here/artifacts/$target"
    log="$scratch/$target.log"
    mkdir -p "$work" "$artifacts"
    seeds=()
    [ -d "$corpus" ] && seeds=("$corpus")

    echo "fuzz smoke: running $target for ${seconds}s"
    status=0
    # The scratch corpus comes first: libFuzzer writes new inputs only there.
    cargo +nightly fuzz run "$target" "$work" "${seeds[@]}" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -timeout=30 \
        -dict="$here/ipc.dict" \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 || status=$?

    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        # Fall back to the last status line: "#N DONE ... exec/s: R ...".
        last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
        execs="$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")"
        rate="$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$last")"
    fi
    line="$target: ${execs:-?} execs in ${seconds}s (${rate:-?} exec/s)"

    if [ "$status" -ne 0 ]; then
        echo "fuzz smoke: $target FAILED (exit $status):"
        grep -E -A 8 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log" |
            head -n 60 || tail -n 40 "$log"
        crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        if [ -n "$crash" ]; then
            echo "fuzz smoke: reproduce with: (cd fuzz && cargo +nightly fuzz run $target $crash)"
        fi
        failed+=("$target")
        summary+=("$line, FAILED")
    else
        summary+=("$line, no crash")
    fi
done

echo "fuzz smoke: summary"
for line in "${summary[@]}"; do
    echo "  $line"
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz smoke: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke: all ${#targets[@]} targets ran without a crash"
