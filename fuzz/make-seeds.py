#!/usr/bin/env python3
"""Writes the seed corpus of the `header`, `recv` and `calls` fuzz targets.

    python3 fuzz/make-seeds.py

Each seed is one small file under fuzz/corpus/<target>/, named after what it
holds; the script rewrites those files and touches nothing else. The `recv`
and `calls` layouts are described at the top of fuzz/fuzz_targets/recv.rs and
fuzz/fuzz_targets/calls.rs.

The `roundtrip` seeds are in that target's `arbitrary` layout, which is not
written by hand: they are 24 inputs of up to 400 bytes sampled (every 39th by
size) from a 10-minute run's corpus after `-merge=1 -max_len=400`.

The `calls` corpus is the seed-* files written here plus the inputs (named by
their SHA-1) that `cargo fuzz cmin calls` kept from a 10-minute run; cmin
drops or renames seeds it finds redundant, so the script was run again after
it and the copies of seeds under hash names were deleted.
"""

import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"

MAGIC = b"IP"
VERSION = 1


def header(fd_count, data_len, magic=MAGIC, version=VERSION):
    return magic + bytes([version, fd_count]) + struct.pack("<I", data_len)


def message(data=b"", fds=0):
    return header(fds, len(data)) + data


# --- header: raw bytes, read as they are (and through `arbitrary`) ---------

HEADER_SEEDS = {
    "empty-message": header(0, 0),
    "fds-and-length": header(2, 300),
    "max-fields": header(255, 0xFFFF_FFFF),
    "with-trailing-data": header(1, 5) + b"hello",
    "short-3": b"IP\x01",
    "short-7": header(0, 0)[:7],
    "bad-magic": header(0, 0, magic=b"XX"),
    "bad-magic-bad-version": header(0, 0, magic=b"ab", version=9),
    "version-0": header(0, 0, version=0),
    "version-2": header(0, 0, version=2),
}

# --- recv: flags byte, then records of control byte, u16 length, bytes -----

HANG_UP = 0x01
FIX_MAGIC, FIX_FD_COUNT, FIX_DATA_LEN, ALL_MEMFDS = 0x10, 0x20, 0x40, 0x80


def record(body, fds=0, fix=0):
    assert 0 <= fds <= 12 and len(body) <= 4096
    return bytes([fds | fix]) + struct.pack("<H", len(body)) + body


CAPACITY = {4: 0x00, 3: 0x04, 1: 0x06}


def recv_input(*records, hang_up=False, capacity=4):
    flags = (HANG_UP if hang_up else 0) | CAPACITY[capacity]
    return bytes([flags]) + b"".join(records)


SHORT = [record(header(0, 0)[:n]) for n in range(8)]
JUNK = [
    record(header(0, 0, magic=b"XX")),
    record(header(0, 0, version=2)),
    record(header(0, 5) + b"abcd"),  # declares 5, carries 4
    record(header(2, 0), fds=1),  # declares 2, one sent
    record(header(1, 0)),  # declares 1, none sent
    record(header(0, 65) + bytes(65)),  # one byte past the buffer
    record(header(5, 0), fds=5),  # one fd past the capacity
    record(header(4, 0), fds=6),  # MSG_CTRUNC, header understates
    record(header(12, 0), fds=12, fix=ALL_MEMFDS),
    record(b"", fds=3),  # 0-byte record with fds
]
GOOD = [
    record(message()),
    record(message(b"frame 1", 1), fds=1),
    record(message(bytes(range(64)), 4), fds=4, fix=ALL_MEMFDS),
    record(message(b"stats", 3), fds=3),
]

RECV_SEEDS = {
    "nothing": recv_input(),
    "nothing-hang-up": recv_input(hang_up=True),
    "good-empty": recv_input(GOOD[0]),
    "good-one-fd": recv_input(GOOD[1]),
    "good-full-buffer-four-memfds": recv_input(GOOD[2]),
    "good-then-hang-up": recv_input(GOOD[3], hang_up=True),
    "short-records": recv_input(*SHORT),
    "zero-byte-then-hang-up": recv_input(record(b""), hang_up=True),
    "bad-magic": recv_input(JUNK[0]),
    "bad-version": recv_input(JUNK[1]),
    "length-mismatch": recv_input(JUNK[2]),
    "fd-count-mismatch": recv_input(JUNK[3], JUNK[4]),
    "truncated": recv_input(JUNK[5]),
    "too-many-fds": recv_input(JUNK[6]),
    "ctrunc-understated": recv_input(JUNK[7]),
    "twelve-memfds": recv_input(JUNK[8]),
    "zero-bytes-with-fds": recv_input(JUNK[9]),
    "junk-between-good": recv_input(
        GOOD[1], *JUNK[:5], GOOD[2], *JUNK[5:], GOOD[3], hang_up=True
    ),
    # Capacity 3 has room for 4 fds, capacity 1 for 2 (alignment slack).
    "capacity-3-good": recv_input(GOOD[3], capacity=3),
    "capacity-3-slack-honest": recv_input(record(header(4, 0), fds=4), capacity=3),
    "capacity-3-slack-lying": recv_input(record(header(5, 0), fds=4), capacity=3),
    "capacity-3-ctrunc": recv_input(
        record(header(4, 0), fds=6), record(header(6, 0), fds=6), capacity=3
    ),
    "capacity-1-slack-and-ctrunc": recv_input(
        GOOD[1],
        record(header(2, 0), fds=2),
        record(header(7, 0), fds=2),
        record(header(2, 0), fds=3),
        capacity=1,
        hang_up=True,
    ),
    "fix-up-flags": recv_input(
        record(bytes(20), fds=2, fix=FIX_MAGIC | FIX_FD_COUNT | FIX_DATA_LEN),
        record(bytes(100), fds=7, fix=FIX_MAGIC | FIX_FD_COUNT | FIX_DATA_LEN),
        # The input ends after the length: the record is 4096 zero bytes.
        bytes([FIX_MAGIC | FIX_DATA_LEN]) + struct.pack("<H", 4096),
    ),
}


# --- calls: flags byte, then records of control byte, [kind, cookie], u16
# length, source -------------------------------------------------------------

C_CALLER, C_PEER_HELLO, C_HANG_UP = 0x01, 0x02, 0x04
C_FIRST_ZERO, C_LAST_ZERO, C_CANCEL_FIRST = 0x20, 0x40, 0x80
C_V1, C_CALL, C_TYPED, C_ALL_MEMFDS = 0x10, 0x20, 0x40, 0x80
HELLO, REQUEST, REPLY, ERROR_REPLY, EVENT, HANDLER_ERROR = 1, 2, 3, 4, 5, 6
NAME, PROTOCOL_VERSION = b"fuzz.calls", 3


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pc_bytes(b):
    return varint(len(b)) + b


def call_rec(kind, cookie, body, fds=0, v1=True, typed=False, memfds=False, raw_kind=None):
    """A record with a call header: `kind` 1..6 (or the raw kind byte
    `raw_kind`), the cookie byte `cookie`, and `body` (raw postcard, or the
    `arbitrary` source with `typed`)."""
    assert 0 <= fds <= 12 and len(body) <= 1024
    control = fds | C_CALL | (C_V1 if v1 else 0) | (C_TYPED if typed else 0)
    control |= C_ALL_MEMFDS if memfds else 0
    k = raw_kind if raw_kind is not None else kind - 1
    return bytes([control, k, cookie]) + struct.pack("<H", len(body)) + body


def raw_rec(body, fds=0, v1=True):
    control = fds | (C_V1 if v1 else 0)
    return bytes([control]) + struct.pack("<H", len(body)) + body


def calls_input(flags, *records, calls=0):
    return bytes([flags | (calls << 3)]) + b"".join(records)


# A "calls v1" hello (no schema hashes): refused as unreadable.
V1_HELLO = pc_bytes(NAME) + varint(PROTOCOL_VERSION)
# The matching "calls v2" hello carries the schema hashes of the target's
# types, which the target computes: a typed hello body whose `arbitrary`
# source is empty is `HelloM::Good`.
GOOD = dict(typed=True)
PING = b"\x00"
ECHO_SHORT = b"\x01" + pc_bytes(b"hi")
ECHO_LONG = b"\x01" + pc_bytes(bytes(range(60)))
TAKE = b"\x02\x01\x00"
TAKE_SAME = b"\x02\x00\x00"
TAKE_OUT = b"\x02\x00\x05"
TEXT_SLOT = b"\x03" + pc_bytes("\u00e9t\u00e9".encode()) + b"\x01\x01"
TEXT = b"\x03" + pc_bytes(b"abc") + b"\x00"
FAIL = b"\x04"
NESTED = b"\x05" + varint(300) + varint(3) + b"\x01\x01" + pc_bytes("\u00df".encode()) + b"xyz"
DENY = b"\x06" + pc_bytes(b"no sensor")
DENY_LONG = b"\x06" + pc_bytes(bytes(70))
# The handlers' own error type: Denied(u16) or Why(&str).
DENIED = b"\x00" + varint(404)
WHY = b"\x01" + pc_bytes(b"too dark")
UNKNOWN = b"\x09"
# Literal cookie bytes (0x80 | n) for the caller, plain for the responder.
LIT = 0x80

CALLS_SEEDS = {
    # Responder.
    "r-ping": calls_input(C_PEER_HELLO, call_rec(REQUEST, 7, PING)),
    "r-request-before-hello": calls_input(0, call_rec(REQUEST, 7, PING, fds=1)),
    "r-hello-in-junk-then-requests": calls_input(
        0, call_rec(HELLO, 0, b"", **GOOD), call_rec(REQUEST, 1, TAKE, fds=2, memfds=True)
    ),
    "r-take": calls_input(C_PEER_HELLO, call_rec(REQUEST, 9, TAKE, fds=2)),
    "r-take-bad-slots": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 9, TAKE_SAME, fds=2),
        call_rec(REQUEST, 10, TAKE_OUT, fds=3),
        call_rec(REQUEST, 11, TAKE, fds=1),
    ),
    "r-echo": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 1, ECHO_SHORT),
        call_rec(REQUEST, 2, ECHO_LONG),
        call_rec(REQUEST, 0, ECHO_LONG),
    ),
    "r-text-fail-nested": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 3, TEXT_SLOT, fds=2),
        call_rec(REQUEST, 4, TEXT),
        call_rec(REQUEST, 5, FAIL, fds=4),
        call_rec(REQUEST, 0, FAIL),
        call_rec(REQUEST, 6, NESTED),
    ),
    "r-undecodable": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 1, UNKNOWN),
        call_rec(REQUEST, 2, PING + b"trailing"),
        call_rec(REQUEST, 3, b"\x01\x7f"),
        call_rec(REQUEST, 4, b""),
    ),
    "r-mismatched-hellos": calls_input(
        C_PEER_HELLO,
        call_rec(HELLO, 0, pc_bytes(NAME) + varint(4)),
        call_rec(REQUEST, 1, PING),
        call_rec(HELLO, 0, pc_bytes(b"other") + varint(3)),
        call_rec(HELLO, 0, b"\xff\xff"),
        call_rec(HELLO, 0, V1_HELLO),
        call_rec(HELLO, 0, b"", fds=2, **GOOD),
        call_rec(REQUEST, 2, PING),
    ),
    "r-not-requests": calls_input(
        C_PEER_HELLO,
        call_rec(REPLY, 1, b"\x00", fds=1),
        call_rec(ERROR_REPLY, 2, b"\x03"),
        call_rec(EVENT, 0, b"\x00\x01", fds=3, memfds=True),
    ),
    "r-bad-call-headers": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 1, PING, raw_kind=0xE1),
        call_rec(REQUEST, 1, PING, raw_kind=0xF0, fds=1),
        call_rec(REQUEST, 1, PING, raw_kind=0xF7),
        raw_rec(b"\x02\x00\x00", fds=2),
        call_rec(REQUEST, 2, PING),
    ),
    "r-channel-junk": calls_input(
        C_PEER_HELLO,
        raw_rec(b"\x02\x00\x00\x00\x01\x00\x00\x00\x00", v1=False, fds=1),
        call_rec(REQUEST, 1, PING, fds=5),
        call_rec(REQUEST, 2, ECHO_SHORT + bytes(200)),
        call_rec(REQUEST, 3, PING, fds=12, memfds=True),
        call_rec(REQUEST, 4, PING),
    ),
    "r-typed": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 1, bytes(range(40)), typed=True, fds=2),
        call_rec(REQUEST, 2, bytes(range(200, 240)), typed=True, fds=3),
        call_rec(HELLO, 0, b"\x00", typed=True),
    ),
    "r-hang-up": calls_input(C_PEER_HELLO | C_HANG_UP, call_rec(REQUEST, 5, PING)),
    "r-deny": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 1, DENY, fds=1),
        call_rec(REQUEST, 0, DENY),
        call_rec(REQUEST, 2, DENY_LONG),
        call_rec(HANDLER_ERROR, 3, DENIED, fds=2),
        call_rec(REQUEST, 4, PING),
    ),
    "r-too-large": calls_input(
        C_PEER_HELLO,
        call_rec(REQUEST, 1, ECHO_SHORT + bytes(300), fds=2),
        call_rec(HELLO, 0, pc_bytes(NAME + bytes(200)) + varint(3)),
        call_rec(REQUEST, 2, PING),
    ),
    # Caller.
    "c-reply": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(REPLY, 0, b"\x03\x05", fds=1),
        calls=2,
    ),
    "c-replies-and-events": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(EVENT, 0, b"\x00\x07"),
        call_rec(REPLY, 1, b"\x02\x00\x01", fds=2),
        call_rec(EVENT, 0, b"\x02\x00", fds=1, memfds=True),
        call_rec(REPLY, 1, b"\x00"),
        call_rec(EVENT, 0, b"\x01" + pc_bytes(b"blob")),
        calls=3,
    ),
    "c-error-replies": calls_input(
        C_CALLER,
        call_rec(ERROR_REPLY, 0, b"\x03", fds=2),
        call_rec(ERROR_REPLY, 1, b""),
        call_rec(ERROR_REPLY, 2, b"\xc8"),
        calls=3,
    ),
    "c-late-and-unknown-cookies": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(REPLY, LIT | 0, b"\x00"),
        call_rec(REPLY, LIT | 0x55, b"\x00", fds=1),
        call_rec(ERROR_REPLY, LIT | 0x56, b"\x01"),
        call_rec(REPLY, 0, b"\x00"),
        call_rec(REPLY, 0, b"\x00"),
        calls=1,
    ),
    "c-bad-bodies": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(REPLY, 0, b"\x09", fds=1),
        call_rec(REPLY, 1, b"\x00\x00"),
        call_rec(EVENT, 0, b"\x07", fds=2),
        call_rec(EVENT, 0, b""),
        calls=2,
    ),
    "c-mismatched-hello": calls_input(
        C_CALLER,
        call_rec(HELLO, 0, pc_bytes(NAME) + varint(2)),
        call_rec(REPLY, 0, b"\x00"),
        calls=3,
    ),
    "c-zero-timeouts": calls_input(
        C_CALLER | C_PEER_HELLO | C_FIRST_ZERO | C_LAST_ZERO,
        call_rec(REPLY, 0, b"\x00"),
        call_rec(REPLY, 1, b"\x00", fds=1),
        call_rec(REPLY, 2, b"\x04\x01"),
        calls=3,
    ),
    "c-handler-errors": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(HANDLER_ERROR, 0, DENIED, fds=1),
        call_rec(HANDLER_ERROR, 1, WHY),
        call_rec(HANDLER_ERROR, 2, b"\x05"),
        call_rec(HANDLER_ERROR, LIT | 0x40, WHY),
        calls=3,
    ),
    "c-cancel": calls_input(
        C_CALLER | C_PEER_HELLO | C_CANCEL_FIRST,
        call_rec(REPLY, 0, b"\x03\x05", fds=1),
        call_rec(HANDLER_ERROR, 0, DENIED),
        call_rec(REPLY, 1, b"\x03\x06"),
        calls=2,
    ),
    "c-too-large": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(REPLY, 0, b"\x01" + pc_bytes(bytes(200)), fds=2),
        call_rec(EVENT, 0, b"\x01" + pc_bytes(bytes(200)), fds=1),
        call_rec(HANDLER_ERROR, 1, b"\x01" + pc_bytes(bytes(200))),
        calls=2,
    ),
    "c-reply-before-hello": calls_input(
        C_CALLER,
        call_rec(REPLY, 0, b"\x03\x05"),
        call_rec(HELLO, 0, b"", **GOOD),
        calls=2,
    ),
    "c-hang-up": calls_input(
        C_CALLER | C_PEER_HELLO | C_HANG_UP,
        call_rec(REPLY, 0, b"\x00"),
        calls=3,
    ),
    "c-requests-and-junk": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(REQUEST, 0, PING, fds=2),
        call_rec(REPLY, 0, b"\x00", raw_kind=0xE2),
        call_rec(REPLY, 0, b"\x00", fds=6),
        raw_rec(b"\x03\x00", v1=True),
        call_rec(REPLY, 0, b"\x01" + pc_bytes(bytes(150))),
        calls=2,
    ),
    "c-typed": calls_input(
        C_CALLER | C_PEER_HELLO,
        call_rec(REPLY, 0, bytes(range(30)), typed=True, fds=1),
        call_rec(EVENT, 0, bytes(range(50, 90)), typed=True, fds=2),
        call_rec(HELLO, 0, bytes([1, 2, 3, 4]), typed=True),
        calls=3,
    ),
}


def write(target, seeds):
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)


def main():
    write("header", HEADER_SEEDS)
    write("recv", RECV_SEEDS)
    write("calls", CALLS_SEEDS)


if __name__ == "__main__":
    main()
