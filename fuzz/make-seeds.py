#!/usr/bin/env python3
"""Writes the seed corpus of the `header` and `recv` fuzz targets.

    python3 fuzz/make-seeds.py

Each seed is one small file under fuzz/corpus/<target>/, named after what it
holds; the script rewrites those files and touches nothing else. The `recv`
layout is described at the top of fuzz/fuzz_targets/recv.rs.

The `roundtrip` seeds are in that target's `arbitrary` layout, which is not
written by hand: they are 24 inputs of up to 400 bytes sampled (every 39th by
size) from a 10-minute run's corpus after `-merge=1 -max_len=400`.
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


def write(target, seeds):
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)


def main():
    write("header", HEADER_SEEDS)
    write("recv", RECV_SEEDS)


if __name__ == "__main__":
    main()
