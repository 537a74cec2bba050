#!/usr/bin/env python3
"""Attacks on the game's HTTP side, measured from outside (BENCHMARKS.md, "The HTTP side's edges").

  slowloris: CONNS connections from one loopback address send a request line and a header,
             then another header line every EVERY seconds, never the blank line. Prints how
             many the server has closed after each second of HOLD, and the slowest /healthz
             and /api/connect answer seen meanwhile from another loopback address.
  burst:     one keep-alive connection asks /api/connect N times as fast as it can; prints how
             many got a token (200) and how many were refused (429), and the rate of tokens.

Run against a server started with --exempt-loopback false (loopback is spared per-address
limits otherwise), e.g.
  arena-server --exempt-loopback false &
  python3 benches/http_edges.py slowloris --server 127.0.0.1:8080 --conns 200 --hold 45
  python3 benches/http_edges.py burst --server 127.0.0.1:8080 --n 2000
Clients bind 127.0.0.2 (the attacker) and 127.0.0.3 (the probe): Linux routes all of 127/8 to lo.
"""

import argparse
import http.client
import selectors
import socket
import time


def probe(host, port, path, source):
    """Seconds one GET takes on a fresh connection, or None unless it got a 200 within 5 s."""
    start = time.monotonic()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    return time.monotonic() - start


def slowloris(args):
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    socks = []
    refused = 0
    for i in range(args.conns):
        s = socket.socket()
        s.bind((args.attacker, 0))
        try:
            s.connect((host, port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    start = time.monotonic()
    opened = len(socks)
    open_socks = set(socks)
    # epoll rather than select(): more than 1024 sockets are fine.
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed_at = []
    worst = {"/healthz": 0.0, "/api/connect": 0.0}
    failed = 0
    last_header = start
    next_report = start + 1.0
    while time.monotonic() - start < args.hold:
        # A round every 0.25 s: the probes' 4 /api/connect a second stay under the default
        # per-address rate.
        if open_socks:
            readable = [key.fileobj for key, _ in sel.select(0.25)]
        else:
            readable = []
            time.sleep(0.25)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            # An answer (a 408) or EOF: either way the server has let go of the request.
            del data
            open_socks.discard(s)
            sel.unregister(s)
            s.close()
            closed_at.append(time.monotonic() - start)
        now = time.monotonic()
        if now - last_header >= args.every:
            last_header = now
            for s in list(open_socks):
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    open_socks.discard(s)
                    sel.unregister(s)
                    s.close()
                    closed_at.append(now - start)
        for path in worst:
            t = probe(host, port, path, args.probe)
            if t is None:
                failed += 1
            else:
                worst[path] = max(worst[path], t)
        if now >= next_report:
            next_report += 1.0
            print(
                f"t={now - start:5.1f}s open={len(open_socks)}/{opened} "
                f"worst healthz={worst['/healthz'] * 1000:.1f}ms "
                f"connect={worst['/api/connect'] * 1000:.1f}ms failed_probes={failed}",
                flush=True,
            )
    closed_at.sort()
    print(
        f"slowloris: {opened} opened ({refused} refused at connect), {len(closed_at)} closed by "
        f"the server within {args.hold}s (last at {closed_at[-1] if closed_at else float('nan'):.2f}s), "
        f"{len(open_socks)} still open; probes from {args.probe}: worst /healthz "
        f"{worst['/healthz'] * 1000:.1f} ms, worst /api/connect {worst['/api/connect'] * 1000:.1f} ms, "
        f"{failed} failed"
    )
    for s in open_socks:
        s.close()


def burst(args):
    host, port = args.server.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5, source_address=(args.attacker, 0))
    counts = {}
    start = time.monotonic()
    for _ in range(args.n):
        try:
            conn.request("GET", "/api/connect")
            resp = conn.getresponse()
            resp.read()
            counts[resp.status] = counts.get(resp.status, 0) + 1
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            counts["error"] = counts.get("error", 0) + 1
            conn.close()
    elapsed = time.monotonic() - start
    ok = counts.get(200, 0)
    print(
        f"burst: {args.n} requests from {args.attacker} in {elapsed:.2f}s: {counts}; "
        f"{ok / elapsed:.0f} tokens/s"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["slowloris", "burst"])
    p.add_argument("--server", default="127.0.0.1:8080")
    p.add_argument("--attacker", default="127.0.0.2")
    p.add_argument("--probe", default="127.0.0.3")
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--hold", type=float, default=45.0)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    slowloris(args) if args.mode == "slowloris" else burst(args)


if __name__ == "__main__":
    main()
