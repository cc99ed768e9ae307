#!/usr/bin/env bash
# User-space instructions per round trip, per variant and cell, counted with
# valgrind --tool=callgrind. Unlike the timings, these counts repeat exactly
# on a noisy machine; they do not include the kernel (system calls, context
# switches), which is where almost all of a round trip's time goes.
#
#   bash bench/callgrind.sh            # writes bench/results/callgrind.md
#   bash bench/callgrind.sh calls      # typed calls: bench/callgrind-calls.sh
#
# Builds a second copy of the bench with v0 symbol mangling (so each
# monomorphised loop keeps its type name) in bench/target/callgrind, then
# for every cell runs the two-thread ping-pong once with a fixed number of
# round trips and reads the inclusive cost of each variant's measuring loop
# (`Harness<E>::pingpong`) and echo loop (`serve::<E>`), minus the harness's
# own per-round-trip timing (`Instant::now`, `Instant - Instant`) and the
# median selection that follows the loop.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == calls ]]; then
  exec bash "$bench_dir/callgrind-calls.sh" "${@:2}"
fi
out=${1:-$bench_dir/results/callgrind.md}
n=2000
# Round trips each variant's pingpong runs for one cell with --reps 1
# --fixed-n N: N/4 warm-up, one per-repetition warm-up of clamp(N/16, 4, 512),
# then N timed (see measure_cells in src/main.rs).
warm=$(( n / 16 )); (( warm < 4 )) && warm=4; (( warm > 512 )) && warm=512
total=$(( n / 4 + warm + n ))

command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
command -v callgrind_annotate >/dev/null || { echo "callgrind_annotate not found" >&2; exit 1; }

RUSTFLAGS="-C symbol-mangling-version=v0" \
  cargo build --release --quiet --manifest-path "$bench_dir/Cargo.toml" \
  --target-dir "$bench_dir/target/callgrind"
bin=$bench_dir/target/callgrind/release/ipc-unixsocket-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

variants="crate crate-poll crate-frame raw raw-poll raw-bare libcamera std-dgram nix sendfd uds"
declare -A type_of=(
  [crate]='variants::Crate<false>' [crate-poll]='variants::Crate<true>' [crate-frame]='variants::CrateFrame'
  [raw]='variants::Raw<false>' [raw-poll]='variants::Raw<true>'
  [raw-bare]='variants::Raw<false, false>' [libcamera]='variants::Libcamera'
  [std-dgram]='variants::StdDatagram' [nix]='variants::Nix'
  [sendfd]='variants::Sendfd' [uds]='variants::Uds'
)

{
  echo "# User-space instructions per round trip (callgrind)"
  echo
  echo "Command: \`bash bench/callgrind.sh\`; $(valgrind --version); $(rustc --version)."
  echo "Two threads, $n timed round trips per cell ($total in all per variant, warm-ups included, divided out)."
  echo "Both ends are counted (measuring loop + echo loop); the harness's own timing calls are subtracted."
  echo "Kernel work (the system calls, the context switches) is not counted: these are the instructions each"
  echo "library executes in user space around the same system calls."
  echo
  printf '| data B | fds |'
  for v in $variants; do printf ' %s |' "$v"; done
  printf ' crate − raw |\n|---:|---:|'
  for v in $variants; do printf -- '---:|'; done
  printf -- '---:|\n'
} >"$out"

for size in 0 64 4096 65536; do
  for fds in 0 1 4; do
    cg=$work/cg.$size.$fds
    valgrind --tool=callgrind --callgrind-out-file="$cg" "$bin" \
      --shapes thread --sizes "$size" --fds "$fds" --reps 1 --fixed-n "$n" \
      --no-throughput --no-calls --no-binary-sizes --out "$work/out" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes --tree=calling "$cg" 2>/dev/null >"$cg.tree"
    printf '| %s | %s |' "$size" "$fds" >>"$out"
    crate_value="" raw_value=""
    for v in $variants; do
      ty=${type_of[$v]}
      value=$(awk -v ty="$ty" -v total="$total" '
        function num(s) { gsub(/,/, "", s); return s + 0 }
        # A function entry line: "  1,234 (x%)  *  ???:name [...]".
        /\*  / {
          loop = index($0, "Harness<ipc_unixsocket_bench::" ty "> as") > 0 && index($0, ">::pingpong") > 0
          echo = index($0, "harness::serve::<ipc_unixsocket_bench::" ty ">") > 0
          if (loop) pingpong += num($1)
          if (echo) serve += num($1)
          next
        }
        # Callees of the measuring loop that belong to the harness.
        loop && />   / && (/Instant>::now/ || /Instant as core::ops::arith::Sub/ || /partition_at_index/ || /memset/) {
          harness += num($1)
        }
        END {
          if (pingpong == 0) { print "—"; exit }
          printf "%.0f", (pingpong - harness + serve) / total
        }' "$cg.tree")
      printf ' %s |' "$value" >>"$out"
      [[ $v == crate ]] && crate_value=$value
      [[ $v == raw ]] && raw_value=$value
    done
    if [[ $crate_value =~ ^[0-9]+$ && $raw_value =~ ^[0-9]+$ ]]; then
      printf ' %+d |\n' $(( crate_value - raw_value )) >>"$out"
    else
      printf ' — |\n' >>"$out"
    fi
    echo "callgrind: $size B $fds fds done" >&2
  done
done
echo "wrote $out" >&2
