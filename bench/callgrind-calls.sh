#!/usr/bin/env bash
# User-space instructions per typed call (`Caller::call` + `Responder::serve`)
# against the channel round trip carrying the same record (`send_frame` /
# `recv_frame`), the two per-frame calls, and the IPCPipe emulation, counted
# with valgrind --tool=callgrind. Exact and repeatable; the kernel (system
# calls, context switches) is not counted.
#
#   bash bench/callgrind.sh calls [OUT]    # writes bench/results/callgrind-calls.md
#
# Each (case, variant) runs alone in the two-thread shape, twice, with
# --fixed-n 1000 and 2000. Per round trip = the difference between the two
# runs of (measuring loop − its per-round-trip `Instant` calls + the peer's
# loop) divided by the difference in round trips: the set-up (hellos, the
# `configure` call, the stop message) is the same in both runs and cancels.
#
# rustix's vDSO lookup crashes under valgrind (bytecodealliance/rustix#1559),
# and typed calls read CLOCK_MONOTONIC through it, so this copy of the bench
# is built with `--cfg rustix_use_libc` (rustix's libc backend): every
# variant here makes its system calls through libc's wrappers, so the counts
# are comparable with each other, not with callgrind.md's.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
out=${1:-$bench_dir/results/callgrind-calls.md}
command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
command -v callgrind_annotate >/dev/null || { echo "callgrind_annotate not found" >&2; exit 1; }

RUSTFLAGS="-C symbol-mangling-version=v0 --cfg rustix_use_libc" \
  cargo build --release --quiet --manifest-path "$bench_dir/Cargo.toml" \
  --target-dir "$bench_dir/target/callgrind-libc"
bin=$bench_dir/target/callgrind-libc/release/ipc-unixsocket-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Round trips of one variant in one cell with --reps 1 --fixed-n N (see
# run_section in src/calls.rs): max(N/4, warm) + warm + N.
trips() {
  local n=$1 warm=$(( $1 / 16 ))
  (( warm < 4 )) && warm=4; (( warm > 512 )) && warm=512
  local first=$(( n / 4 )); (( first < warm )) && first=$warm
  echo $(( first + warm + n ))
}

declare -A loop_of=(
  [channel]='calls::ChannelBench>::channel_loop::<false> ['
  [channel-poll]='calls::ChannelBench>::channel_loop::<true> ['
  [call]='calls::TypedBench>::typed_echo_loop ['
  [call-no-deadline]='calls::TypedBench>::typed_echo_loop ['
  [ipcpipe]='calls::IpcPipeBench>::ipcpipe_loop ['
  [frame-by-id]='calls::TypedBench>::typed_frame_loop::<false> ['
  [frame-fd-each]='calls::TypedBench>::typed_frame_loop::<true> ['
)
declare -A worker_of=(
  [channel]='calls::channel_worker [' [channel-poll]='calls::channel_worker ['
  [call]='calls::typed_worker ['
  [call-no-deadline]='calls::typed_worker [' [ipcpipe]='calls::ipcpipe_worker ['
  [frame-by-id]='calls::typed_worker [' [frame-fd-each]='calls::typed_worker ['
)

# Measuring loop minus its Instant calls, plus the peer's loop, in one run.
cost() {
  awk -v loop="$2" -v worker="$3" '
    function num(s) { gsub(/,/, "", s); return s + 0 }
    /\*  / {
      in_loop = index($0, loop) > 0
      if (in_loop) total += num($1)
      if (index($0, worker) > 0) total += num($1)
      next
    }
    in_loop && />   / && (/Instant>::now/ || /Instant as core::ops::arith::Sub/) { total -= num($1) }
    END { printf "%d", total }' "$1"
}

run() { # case variant n -> tree file
  local cg=$work/cg.$1.$2.$3
  valgrind --tool=callgrind --callgrind-out-file="$cg" "$bin" --calls-only \
    --shapes thread --calls-cases "$1" --calls-variants "$2" --reps 1 --fixed-n "$3" \
    --out "$work/out" >/dev/null 2>&1
  callgrind_annotate --inclusive=yes --tree=calling "$cg" 2>/dev/null >"$cg.tree"
  echo "$cg.tree"
}

n1=1000 n2=2000
t1=$(trips $n1) t2=$(trips $n2)
{
  echo "# User-space instructions per typed call (callgrind)"
  echo
  echo "Command: \`bash bench/callgrind.sh calls\`; $(valgrind --version); $(rustc --version); rustix libc backend (see the script)."
  echo "Two threads; each (case, variant) alone, run with --fixed-n $n1 and $n2 ($t1 and $t2 round trips);"
  echo "per round trip = difference of (measuring loop − its \`Instant\` calls + peer loop) / $(( t2 - t1 )). Both ends"
  echo "are counted; set-up (hellos, \`configure\`, stop) cancels. The kernel is not counted."
  echo
  echo "| case | variant | instructions per round trip | − baseline |"
  echo "|---|---|---:|---:|"
} >"$out"

for case in small large frame; do
  case $case in
    small|large) variants="channel channel-poll call call-no-deadline ipcpipe" ;;
    frame) variants="frame-by-id frame-fd-each" ;;
  esac
  base=""
  for v in $variants; do
    a=$(cost "$(run $case $v $n1)" "${loop_of[$v]}" "${worker_of[$v]}")
    b=$(cost "$(run $case $v $n2)" "${loop_of[$v]}" "${worker_of[$v]}")
    per=$(( (b - a) / (t2 - t1) ))
    [[ -z $base ]] && base=$per
    printf '| %s | %s | %d | %+d |\n' "$case" "$v" "$per" $(( per - base )) >>"$out"
    echo "callgrind calls: $case $v $per" >&2
  done
done

# Where a typed call's instructions go: the callees of `Caller::call` and
# `Responder::serve` in the small case (0 fds), per round trip.
tree1=$work/cg.small.call.$n1.tree tree2=$work/cg.small.call.$n2.tree
{
  echo
  echo "## Where the typed call goes (small case, \`call\` with a deadline), per round trip"
  echo
  echo "Inclusive instructions of each direct callee of \`Caller::call\` and of \`Responder::serve\`"
  echo "(difference of the two runs / $(( t2 - t1 )))."
  echo
  echo "| in | callee | instructions per round trip |"
  echo "|---|---|---:|"
} >>"$out"
callees() { # tree caller-pattern -> "count<TAB>name" lines
  awk -v caller="$2" '
    function num(s) { gsub(/,/, "", s); return s + 0 }
    /\*  / { inside = index($0, caller) > 0; if (inside) { self = $0 }; next }
    inside && />   / {
      name = $0; sub(/^[^?]*\?\?\?:/, "", name); sub(/ \([0-9,]+x\) \[.*$/, "", name); sub(/ \[.*$/, "", name)
      sum[name] += num($1)
    }
    END { for (k in sum) printf "%d\t%s\n", sum[k], k }' "$1"
}
for who in 'Caller<ipc_unixsocket_bench::calls::BenchProtocol, 4, 1>>::call::<' 'Responder<ipc_unixsocket_bench::calls::BenchProtocol, 4>>::serve::<'; do
  label=$([[ $who == Caller* ]] && echo "Caller::call" || echo "Responder::serve")
  join -t $'\t' -1 2 -2 2 -a 2 -e 0 -o 0,1.1,2.1 \
    <(callees "$tree1" "$who" | sort -t $'\t' -k2,2) <(callees "$tree2" "$who" | sort -t $'\t' -k2,2) |
    awk -F '\t' -v d=$(( t2 - t1 )) -v label="$label" '{ per = ($3 - $2) / d; if (per >= 1) printf "%.0f\t| %s | `%s` | %.0f |\n", per, label, $1, per }' |
    sort -t $'\t' -k1,1nr | cut -f2- >>"$out"
done
echo "wrote $out" >&2
