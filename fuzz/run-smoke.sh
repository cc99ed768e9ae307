#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target and runs each for a bounded
# time, failing on any crash, leak or timeout that libFuzzer reports.
#
#   bash fuzz/run-smoke.sh [SECONDS_PER_TARGET]    (default 60)
#
# cargo-fuzz needs nightly-only `-Z` flags. It uses `cargo +nightly` when
# that toolchain is installed, and otherwise the stable toolchain with
# RUSTC_BOOTSTRAP=1 (a fresh machine may have only stable, and no way to
# download another). FUZZ_TOOLCHAIN=stable forces the fallback. If neither
# can build the targets it skips with a message and exits 0, except under
# CI=true, where that is a failure. Installs cargo-fuzz
# (`cargo install cargo-fuzz --locked`) if it is missing. The committed corpus under fuzz/corpus/<target>/ is only read: new
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

# No fuzzing is a pass on a developer's machine, a failure in CI.
unavailable() {
    if [ "${CI:-}" = "true" ]; then
        echo "fuzz smoke: FAILED: $*" >&2
        exit 1
    fi
    echo "fuzz smoke: skipped: $*"
    exit 0
}

fuzz=()
fallback=false
if [ "${FUZZ_TOOLCHAIN:-}" != "stable" ] && cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly)
    echo "fuzz smoke: $(cargo +nightly --version)"
elif cargo +stable --version >/dev/null 2>&1; then
    export RUSTC_BOOTSTRAP=1
    fallback=true
    fuzz=(cargo +stable)
    echo "fuzz smoke: no nightly toolchain; $(cargo +stable --version) with RUSTC_BOOTSTRAP=1"
elif cargo --version >/dev/null 2>&1; then
    # A cargo without rustup: whatever toolchain it is.
    export RUSTC_BOOTSTRAP=1
    fallback=true
    fuzz=(cargo)
    echo "fuzz smoke: no nightly toolchain; $(cargo --version) with RUSTC_BOOTSTRAP=1"
else
    unavailable "no cargo runs here"
fi

if ! "${fuzz[@]}" fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || unavailable "cargo install cargo-fuzz --locked failed"
fi
fuzz+=(fuzz)
echo "fuzz smoke: $("${fuzz[@]}" --version)"

targets=()
while IFS= read -r target; do
    targets+=("$target")
done < <("${fuzz[@]}" list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz smoke: no fuzz targets found" >&2
    exit 1
fi

echo "fuzz smoke: building ${targets[*]}"
if ! "${fuzz[@]}" build; then
    if "$fallback"; then
        unavailable "cargo-fuzz could not build the targets with stable and RUSTC_BOOTSTRAP=1"
    fi
    echo "fuzz smoke: build failed" >&2
    exit 1
fi

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
    "${fuzz[@]}" run "$target" "$work" "${seeds[@]}" -- \
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
            echo "fuzz smoke: reproduce with: (cd fuzz && ${fuzz[*]} run $target $crash)"
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
