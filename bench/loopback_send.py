"""The floor under a paced benchmark at high concurrency (README, "Scaling out"): what one SSE-sized message
costs the writing and the reading process on loopback TCP, with nothing but the system calls around it.

A server paced like an engine (a token every 10 ms) at concurrency 1024 writes 102,400 messages a second,
one ``send`` per stream and token, and the client reads each with its own ``recv``. This script opens
``--streams`` loopback connections, writes a 190-byte message to each of them every ``--gap-ms`` from
one process (a bare loop: ``socket.send``, no event loop) and reads them in a second (``epoll`` +
``recv``), and reports the CPU each process spent per message. Whatever the client and the server do in
Python comes on top of these figures; when ``rate x (send + recv)`` is near the number of cores, no
client can keep up on that machine.

    .venv/bin/python bench/loopback_send.py [--streams 1024] [--gap-ms 10] [--seconds 5] [--out FILE]

Writes bench/results/loopback_send.json.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import socket
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "loopback_send.json"
MESSAGE = b"x" * 190  # about one chunked SSE message of a completions stream


def _reader(port: int, streams: int, seconds: float, report_fd: int) -> None:  # pragma: no cover - child
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(streams)]
    ep = select.epoll()
    by_fd = {}
    for c in conns:
        c.setblocking(False)
        ep.register(c.fileno(), select.EPOLLIN)
        by_fd[c.fileno()] = c
    os.write(report_fd, b"ready\n")
    got = reads = 0
    cpu0 = time.process_time()
    end = time.monotonic() + seconds + 1.0
    while time.monotonic() < end:
        for fd, _ in ep.poll(0.1):
            data = by_fd[fd].recv(65536)
            got += len(data)
            reads += 1
    os.write(report_fd, json.dumps({"cpu_s": time.process_time() - cpu0, "bytes": got, "reads": reads}).encode())
    os._exit(0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=1024)
    p.add_argument("--gap-ms", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    a = p.parse_args(argv)
    args = argv if argv is not None else sys.argv[1:]
    print("$ " + shlex.join([Path(sys.executable).name, "bench/loopback_send.py", *args]))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(rfd)
        _reader(port, a.streams, a.seconds, wfd)
    os.close(wfd)
    socks = [listener.accept()[0] for _ in range(a.streams)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with os.fdopen(rfd, "rb") as report:
        if report.readline() != b"ready\n":
            raise RuntimeError("the reading process did not connect")
        gap = a.gap_ms / 1e3
        sent = 0
        cpu0 = time.process_time()
        t0 = time.monotonic()
        tick = t0
        while time.monotonic() - t0 < a.seconds:
            for s in socks:  # the streams' tokens spread over the gap, as requests that started apart
                s.send(MESSAGE)
                sent += 1
            tick += gap
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        wall = time.monotonic() - t0
        send_cpu = time.process_time() - cpu0
        reader = json.loads(report.read())
    os.waitpid(pid, 0)
    send_us = send_cpu / sent * 1e6
    recv_us = reader["cpu_s"] / sent * 1e6
    rate = sent / wall
    result = {"benchmark": "loopback_send", "streams": a.streams, "gap_ms": a.gap_ms, "messages": sent,
              "rate_per_s": round(rate), "send_cpu_us_per_message": round(send_us, 2),
              "recv_cpu_us_per_message": round(recv_us, 2), "reads": reader["reads"],
              "cores_needed": round(rate * (send_us + recv_us) / 1e6, 2), "cores": len(os.sched_getaffinity(0)),
              "load_average": os.getloadavg()}
    print(f"{sent:,} messages of {len(MESSAGE)} bytes over {a.streams} connections in {wall:.1f} s "
          f"({rate:,.0f} a second; target {a.streams / gap:,.0f})")
    print(f"writer: {send_us:.2f} µs of CPU per message; reader: {recv_us:.2f} µs per message "
          f"({reader['reads']:,} reads)")
    print(f"the system calls alone need {result['cores_needed']} cores at this rate; this machine has "
          f"{result['cores']}")
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {a.out}")
    return result


if __name__ == "__main__":
    main()
