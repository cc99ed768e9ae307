#!/usr/bin/env bash
# Footprint of the typed-call layer (issue 19.7): the `.text` size of a
# minimal worker serving a two-variant request enum with
# `Responder::serve` (bench/footprint/src/bin/typed.rs) against one doing
# the same exchange, on the same wire bytes, by hand over
# `recv_frame`/`send_frame` (channel.rs). Both are built with
# `opt-level = "s"`, LTO, `panic = "abort"` and one codegen unit (the
# profile in bench/footprint/Cargo.toml).
#
#   bash bench/footprint.sh          # x86_64 (host toolchain), then ARMv7
#   bash bench/footprint.sh --host   # x86_64 only (no root needed)
#   FOOTPRINT_SYMBOLS=40 bash bench/footprint.sh   # more symbols listed
#
# x86_64 is built with the host's toolchain, and `drive` then runs both
# workers through the exchange and checks that they answer alike. ARMv7
# (armv7-unknown-linux-gnueabihf) is built in the Debian sid chroot that
# .ci/cross keeps (root only; the chroot must exist: run .ci/cross
# armv7-unknown-linux-gnueabihf once). The chroot runs in a mount
# namespace of its own (unshare), so its /proc and /dev mounts are never
# seen by the host or by a .ci/cross run using the same chroot, and go
# with the namespace; its source and target dirs are its own
# (/build/footprint-src, /build/footprint-target).
#
# Sizes are deterministic for a given compiler; the compiler's version is
# printed with them. For each target: both `.text` sizes, the difference,
# and the functions that make it (symbol sizes from `nm`, hashes dropped,
# typed minus channel, largest first).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
project=$repo/bench/footprint
top=${FOOTPRINT_SYMBOLS:-20}
arm=yes
if [[ ${1:-} == --host ]]; then arm=no; fi

step() { printf '\n==> %s\n' "$*"; }

# .text bytes of an ELF file.
text_size() { # FILE [SIZE-ARGS...]
    size -A -d "${@:2}" "$1" | awk '$1 == ".text" { print $2 }'
}

# Function sizes by demangled name (without the hash), summed over
# same-named copies. With `--target elf32-little`, the host's nm and size
# read the ARM binaries too.
symbols() {
    nm --size-sort -S -C -t d "$@" | awk '$3 ~ /^[tTwW]$/ {
        name = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name); sub(/::h[0-9a-f]+$/, "", name)
        size[name] += $2
    } END { for (n in size) printf "%d\t%s\n", size[n], n }'
}

report() { # LABEL DIR [NM-ARGS...]
    local label=$1 dir=$2 typed channel
    shift 2
    typed=$(text_size "$dir/typed" "$@")
    channel=$(text_size "$dir/channel" "$@")
    printf '%s: .text typed %s B, channel %s B, difference %+d B (%+.1f %%)\n' \
        "$label" "$typed" "$channel" $((typed - channel)) \
        "$(awk -v t="$typed" -v c="$channel" 'BEGIN { print (t - c) * 100 / c }')"
    printf '  largest differences (typed - channel, B):\n'
    join -t $'\t' -1 2 -2 2 -a 1 -a 2 -e 0 -o 0,1.1,2.1 \
        <(symbols "$@" "$dir/typed" | sort -t $'\t' -k 2) \
        <(symbols "$@" "$dir/channel" | sort -t $'\t' -k 2) |
        awk -F '\t' '$2 != $3 { printf "%d\t%s\n", $2 - $3, $1 }' |
        sort -t $'\t' -k1,1nr | head -n "$top" | awk -F '\t' '{ printf "  %+7d  %s\n", $1, $2 }'
}

step "x86_64-unknown-linux-gnu, $(rustc --version)"
cargo build --release --quiet --locked --manifest-path "$project/Cargo.toml"
"$project/target/release/drive" "$project/target/release/typed" "$project/target/release/channel"
report x86_64 "$project/target/release"

[[ $arm == yes ]] || exit 0
root=${IPC_CROSS_ROOT:-/var/cache/ipc-unixsocket-cross}/sid
[ "$(id -u)" = 0 ] || { echo "footprint: ARMv7 needs root (chroot); --host for x86_64 only" >&2; exit 1; }
[ -x "$root/usr/bin/arm-linux-gnueabihf-gcc" ] ||
    { echo "footprint: no cross chroot in $root: run .ci/cross armv7-unknown-linux-gnueabihf once" >&2; exit 1; }

# The source as in the work tree, without targets and .git. Nothing is
# mounted under $root/build (the mounts below live in their own
# namespace), so deleting the old copy is safe. The files get the time of
# the copy (-m): cargo then rebuilds this crate and the workers even when the
# tree is older than the last build (another commit checked out).
rm -rf --one-file-system "$root/build/footprint-src"
mkdir -p "$root/build/footprint-src" "$root/build/footprint-target"
tar -C "$repo" --exclude=./target --exclude=./.git --exclude=./fuzz --exclude=./bench/target \
    --exclude=./bench/footprint/target -cf - . | tar -C "$root/build/footprint-src" -xmf -

step "armv7-unknown-linux-gnueabihf, $(chroot "$root" rustc --version)"
# A private mount namespace: proc and /dev for rustc and the linker,
# unmounted when the namespace ends.
unshare --mount --propagation private -- sh -ec '
    mount -t proc proc "$1/proc"
    mount --rbind /dev "$1/dev"
    exec env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 CARGO_HOME=/root/.cargo CARGO_TERM_COLOR=never \
        CARGO_TARGET_DIR=/build/footprint-target \
        chroot "$1" cargo build --release --quiet --locked \
        --manifest-path /build/footprint-src/bench/footprint/Cargo.toml \
        --target armv7-unknown-linux-gnueabihf --bin typed --bin channel
' sh "$root"
report ARMv7 "$root/build/footprint-target/armv7-unknown-linux-gnueabihf/release" --target elf32-little
