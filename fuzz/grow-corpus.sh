#!/usr/bin/env bash
# A long fuzz run that grows the committed corpus: each target runs for
# SECONDS with the committed corpus as its seeds, the new inputs are added
# to it, and `cargo fuzz cmin` then keeps the smallest set of inputs with
# the same coverage. Commit fuzz/corpus/ afterwards, so that coverage
# accumulates from run to run.
#
#   bash fuzz/grow-corpus.sh [SECONDS_PER_TARGET] [TARGET...]   (default 600, all)
#
# Needs cargo-fuzz and nightly (or stable with RUSTC_BOOTSTRAP=1, as
# run-smoke.sh does). A crash stops the script; the input is kept under
# fuzz/artifacts/<target>/.
set -euo pipefail

seconds="${1:-600}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(header recv roundtrip)

fuzz=(cargo +nightly)
if ! cargo +nightly --version >/dev/null 2>&1; then
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo)
fi

for target in "${targets[@]}"; do
    scratch="$(mktemp -d)"
    before=$(find "corpus/$target" -type f | wc -l)
    log="$(mktemp)"
    if ! "${fuzz[@]}" fuzz run "$target" "$scratch" "corpus/$target" -- \
        -dict=ipc.dict -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "grow-corpus: $target: the fuzzer failed; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" || true
    rm -f "$log"
    cp -n "$scratch"/* "corpus/$target"/ 2>/dev/null || true
    rm -rf "$scratch"
    "${fuzz[@]}" fuzz cmin "$target" "corpus/$target" >/dev/null 2>&1
    after=$(find "corpus/$target" -type f | wc -l)
    echo "grow-corpus: $target: $before -> $after inputs, $(du -sk "corpus/$target" | cut -f1) KiB"
done
