"""Closed-loop TLS echo client (the Rust load generator speaks no TLS).

    python bench/tls_client.py HOST PORT CONNS SIZE SECONDS

One thread per connection, each with one message in flight; prints the load generator's JSON line.
The client's speed only bounds requests per second; the comparison uses server CPU per request.
"""

import json
import socket
import ssl
import sys
import threading
import time


def main():
    host, port, conns, size, seconds = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        float(sys.argv[5]),
    )
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    stop = threading.Event()
    samples, errors = [], []
    message = bytes(i % 251 for i in range(size))

    def worker():
        try:
            with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                mine = []
                while not stop.is_set():
                    start = time.perf_counter_ns()
                    s.sendall(message)
                    got = 0
                    while got < size:
                        chunk = s.recv(size - got)
                        if not chunk:
                            raise ConnectionError("server closed")
                        got += len(chunk)
                    mine.append(time.perf_counter_ns() - start)
                samples.extend(mine)
        except Exception as exc:  # reported in the JSON line
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    samples.sort()

    def q(p):
        return samples[min(len(samples) - 1, round((len(samples) - 1) * p))] / 1e3 if samples else 0.0

    print(
        json.dumps(
            {"requests": len(samples), "seconds": elapsed, "p50_us": q(0.5), "p99_us": q(0.99), "errors": len(errors)}
        )
    )
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
