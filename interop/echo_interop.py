#!/usr/bin/env python3
"""Drive the Rust `echo` example from Python over wire format v1.

    cargo build --example echo
    python3 interop/echo_interop.py target/debug/examples/echo

An independent peer, written with the Python 3.11 standard library only
(socket.socketpair(AF_UNIX, SOCK_SEQPACKET), socket.sendmsg / recv_fds,
struct, os.memfd_create, os.fstat, subprocess), checks that `echo` behaves as
its documentation promises:

* bad usage exits 2, and a fd that is not a SOCK_SEQPACKET socket exits 1;
* valid messages, with and without fds, come back as exactly one record each,
  byte-identical, with fds that name the same files (st_dev, st_ino) in the
  same order; the empty message and the largest one (4096 bytes, 8 fds) too;
* every malformed record gets no reply (a good message sent right after it is
  the next thing to come back), exactly one line on echo's stderr, and echo
  closes the fds that came with it;
* echo writes nothing to stdout and exits 0 when this side closes its socket.

Wire format v1: one record per message; an 8-byte header (b"IP", version 1,
fd_count u8, data_len u32 little-endian) then data_len bytes; the fds travel in
one SCM_RIGHTS control message holding exactly fd_count fds, none when 0.

Prints one line per check and a summary; exits 1 if any check fails.
"""

import array
import os
import socket
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("<2sBBI")  # magic, version, fd_count, data_len
MAGIC = b"IP"
VERSION = 1
MAX_DATA = 4096  # echo's receive capacity
MAX_FDS = 8
TIMEOUT = 5.0  # seconds; no single step should come close

failures = []
passes = 0


def check(name, ok, detail=""):
    global passes
    if ok:
        passes += 1
        print(f"ok    {name}")
    else:
        failures.append(name)
        print(f"FAIL  {name}{': ' + detail if detail else ''}")


def header(fd_count, data_len, magic=MAGIC, version=VERSION):
    return HEADER.pack(magic, version, fd_count, data_len)


def message(data, fds=()):
    """A valid record for data and fds."""
    return header(len(fds), len(data)) + data


def send_record(sock, record, fds=()):
    """One sendmsg: the raw record and, only if there are fds, one SCM_RIGHTS."""
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    sent = sock.sendmsg([record], ancillary)
    assert sent == len(record), f"sent {sent} of {len(record)} bytes"


def recv_reply(sock):
    """One record from echo, checked against the v1 rules; (data, fds)."""
    # Room for one byte and many fds more than any valid reply, so a reply
    # that breaks the rules shows up instead of being cut to fit.
    raw, fds, flags, _ = socket.recv_fds(
        sock, HEADER.size + MAX_DATA + 1, 2 * MAX_FDS, socket.MSG_CMSG_CLOEXEC
    )
    problems = []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        problems.append(f"truncated reply (flags {flags:#x})")
    if len(raw) < HEADER.size:
        problems.append(f"reply of {len(raw)} bytes has no header")
    else:
        magic, version, fd_count, data_len = HEADER.unpack_from(raw)
        if (magic, version) != (MAGIC, VERSION):
            problems.append(f"reply header {raw[:4]!r}")
        if data_len != len(raw) - HEADER.size:
            problems.append(f"data_len {data_len} but {len(raw) - HEADER.size} bytes")
        if fd_count != len(fds):
            problems.append(f"fd_count {fd_count} but {len(fds)} fds")
    if problems:
        for fd in fds:
            os.close(fd)
        raise AssertionError("; ".join(problems))
    return raw[HEADER.size :], fds


def identity(fd):
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def memfd(name, contents=b""):
    fd = os.memfd_create(name)  # MFD_CLOEXEC by default
    os.write(fd, contents)
    return fd


def round_trip(sock, name, data, fds=()):
    """Send a valid message; the next reply must be exactly it."""
    try:
        send_record(sock, message(data, fds), fds)
        got, got_fds = recv_reply(sock)
    except (OSError, AssertionError) as error:
        check(name, False, f"{type(error).__name__}: {error}")
        return False
    same_data = got == data
    same_fds = [identity(fd) for fd in got_fds] == [identity(fd) for fd in fds]
    for fd in got_fds:
        os.close(fd)
    detail = []
    if not same_data:
        detail.append(f"data {got[:32]!r}... ({len(got)} bytes) for {data[:32]!r}... ({len(data)} bytes)")
    if not same_fds:
        detail.append(f"{len(got_fds)} fds back for {len(fds)}, or not the same files in order")
    check(name, same_data and same_fds, "; ".join(detail))
    return same_data and same_fds


def open_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle_fd_count(pid, expected):
    """echo closes fds right after a reply; give it a moment to get there."""
    deadline = time.monotonic() + 1.0
    while True:
        count = open_fd_count(pid)
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.005)


def run_usage_checks(echo):
    def status(args, pass_fds=()):
        try:
            done = subprocess.run(
                [echo, *args], pass_fds=pass_fds, capture_output=True, timeout=TIMEOUT
            )
        except subprocess.TimeoutExpired:
            return None, b""
        return done.returncode, done.stderr

    for args, why in [
        ([], "no argument"),
        (["3", "4"], "two arguments"),
        (["three"], "not a number"),
        (["1"], "a standard stream"),
        (["-5"], "a negative number"),
        (["999"], "an fd that is not open"),
    ]:
        code, err = status(args)
        check(f"usage: {why} exits 2", code == 2 and b"usage: echo <FD>" in err, f"status {code}, stderr {err!r}")

    r, w = os.pipe()
    code, err = status([str(r)], pass_fds=[r])
    check("a pipe is refused with status 1", code == 1, f"status {code}, stderr {err!r}")
    os.close(r)
    os.close(w)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    code, err = status([str(b.fileno())], pass_fds=[b.fileno()])
    check("a SOCK_STREAM socket is refused with status 1", code == 1, f"status {code}, stderr {err!r}")
    a.close()
    b.close()


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} PATH/TO/echo", file=sys.stderr)
        return 2
    echo = sys.argv[1]
    if not os.access(echo, os.X_OK):
        print(f"{echo} is not an executable; build it with: cargo build --example echo", file=sys.stderr)
        return 2
    started = time.monotonic()

    run_usage_checks(echo)

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [echo, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    ours.settimeout(TIMEOUT)

    # Files to pass around: two memfds, both ends of a pipe, /dev/null.
    frame_a = memfd("frame-a", b"A" * 100)
    frame_b = memfd("frame-b", b"B" * 200)
    pipe_r, pipe_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    some_fds = [frame_a, pipe_r, frame_b, null, pipe_w]

    # Valid messages.
    round_trip(ours, "bytes, no fds", b"hello, echo")
    baseline = open_fd_count(proc.pid)
    round_trip(ours, "empty message", b"")
    round_trip(ours, "one fd, no data", b"", [frame_a])
    round_trip(ours, "bytes and one fd", b"frame 1", [frame_a])
    round_trip(ours, "five fds keep their order", b"mixed", some_fds)
    round_trip(ours, "five fds, reversed", b"reversed", some_fds[::-1])
    round_trip(ours, "the same file twice", b"twice", [frame_b, frame_b])
    round_trip(ours, "all 256 byte values", bytes(range(256)) * 3)
    round_trip(ours, "largest message: 4096 bytes and 8 fds", os.urandom(MAX_DATA), (some_fds * 2)[:MAX_FDS])
    count = settle_fd_count(proc.pid, baseline)
    check("echo holds no passed fds after replying", count == baseline, f"{count} open, {baseline} before")

    # Malformed records: (name, raw record, fds). None gets a reply.
    malformed = [
        ("empty record (0 bytes)", b"", []),
        ("short record (3 bytes)", b"IP\x01", []),
        ("short record with fds", b"IP", [frame_a, frame_b]),
        ("bad magic", header(0, 4, magic=b"XP") + b"data", []),
        ("bad magic with an fd", header(1, 0, magic=b"ip"), [frame_a]),
        ("wrong version 2", header(0, 4, version=2) + b"data", []),
        ("wrong version 0", header(0, 0, version=0), []),
        ("length mismatch: declares 5, carries 4", header(0, 5) + b"1234", []),
        ("length mismatch: declares 0, carries 3", header(0, 0) + b"abc", []),
        ("length mismatch with fds", header(2, 100) + b"x", [frame_a, frame_b]),
        ("fd_count mismatch: declares 2, sends 1", header(2, 0), [frame_a]),
        ("fd_count mismatch: declares 0, sends 1", header(0, 0), [frame_a]),
        ("fd_count mismatch: declares 1, sends 0", header(1, 0), []),
        ("too many fds: 9 for capacity 8", header(9, 2) + b"hi", [frame_a] * 9),
        ("too many fds: 253 (the kernel maximum)", header(253, 0), [frame_b] * 253),
        ("too many fds, header understates them", header(8, 0), [frame_a] * 9),
        ("data larger than 4096: 4097 bytes", message(bytes(MAX_DATA + 1)), []),
        ("data larger than 4096, with fds", header(2, 70000) + bytes(70000), [frame_a, pipe_r]),
    ]
    for name, record, fds in malformed:
        try:
            send_record(ours, record, fds)
        except OSError as error:
            check(f"rejected: {name}", False, f"could not send: {error}")
            continue
        # The next reply must be this good message, not anything for the bad one.
        round_trip(ours, f"rejected: {name}", f"after {name}".encode(), [frame_b])

    count = settle_fd_count(proc.pid, baseline)
    check("echo closed every fd of the rejected records", count == baseline, f"{count} open, {baseline} before")

    ours.setblocking(False)
    try:
        extra = ours.recv(HEADER.size + MAX_DATA + 1)
        check("no reply left over", False, f"got {extra[:16]!r}")
    except BlockingIOError:
        check("no reply left over", True)

    # Close our end: echo must exit 0.
    ours.close()
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    check("echo exits 0 when the peer closes", proc.returncode == 0, f"status {proc.returncode}")
    check("echo writes nothing to stdout", out == b"", f"stdout {out[:80]!r}")

    lines = err.decode(errors="replace").splitlines()
    one_each = len(lines) == len(malformed) and all(
        line.startswith("echo: rejected record: ") for line in lines
    )
    check(
        f"exactly one stderr line per rejected record ({len(malformed)})",
        one_each,
        f"{len(lines)} lines:\n  " + "\n  ".join(lines),
    )
    print("echo's stderr:")
    for line in lines:
        print(f"  {line}")

    for fd in [frame_a, frame_b, pipe_r, pipe_w, null]:
        os.close(fd)

    elapsed = time.monotonic() - started
    total = passes + len(failures)
    if failures:
        print(f"FAILED: {len(failures)} of {total} checks failed ({elapsed:.2f} s):")
        for name in failures:
            print(f"  {name}")
        return 1
    print(f"passed: all {total} checks ({elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
