#!/usr/bin/env python3
"""Capacity benchmark: how many bots one Arena server process holds.

Starts a server built with the production profile (Cargo.toml), then for each step runs an
`arena-bots` swarm of that size, waits until every bot is connected, measures a steady window
by scraping `/metrics` and reading /proc, and prints one row per step:

  bots held?, server tick p50/p99/max, server CPU % and CPU % per client, server RSS and RSS
  per client, downstream bytes per bot per second, snapshot rate seen by bots (mean and worst
  bot), prediction corrections, UDP datagrams the kernel dropped for a full receive buffer,
  plus the bots' own CPU %, CPU % per bot and RSS per bot (they share the machine), and the
  wall time of the tick's `replicate` phase per client.

CPU % is of one core. Server RSS per client is the growth over the idle server; the bots' RSS
per bot is their process's largest RSS in the window over the bots (its fixed part included).
UDP drops are datagrams the kernel dropped for a full socket receive buffer during the window,
per socket from /proc/net/udp{,6} (its `drops` column): the server's WebTransport socket, then
all the others' (the bots'; on a machine running nothing else).

"Held" means: tick p99 under a third of the tick budget, every bot getting >= 95% of the tick
rate in snapshots, no failed connects, no disconnects, no reconnects.

On a machine where server and bots must share cores, `--bots-nice 19` lets the bots take only
what the server leaves, as clients on other machines would: it shows the server's own tick at a
size. The issue's figures keep the default, equal shares.

Nothing here depends on this machine's size: CPU sets, step sizes and durations are flags, so
the same command runs on a bigger box, e.g.

  benches/capacity.py                                   # 2-core default: server and bots share
  benches/capacity.py --server-cpus 0-7 --bot-cpus 8-15 --steps 1000,2000,4000,8000

The `replicate` phase per client is the phase's mean wall time a tick over the window (its
`arena_tick_phase_seconds` sum and count) over the clients: the live figure of the issue's
"replicate at <= 5 us wall per client" target, which the in-process benches only approach (here
the network threads and the bots share the cores).

Under each row a comment line gives the server's CPU by thread over the same window (names with
their number dropped: the runtime's workers are the network side, `arena-sim` the simulation
with its share of building snapshots) and the CPU that building snapshots took a client a tick,
from the server's `arena_replication_cpu_microseconds_total` (the simulation thread's and its
helpers' own clocks). Set beside the phase's wall time, that says how long the builders waited
for a core. Replication's helper threads (`arena-rep-N`) live for one tick's phase, so they are
left out of the per-thread list; their CPU is in the server's total and in that figure.

Tick percentiles come from the server's histogram (bucket counts at the end of the window minus
those at its start, interpolated inside a bucket); the maximum is the largest value of the
server's `arena_tick_duration_max_seconds` gauge (a 5 s window) seen during the window.
Standard library only (Python 3.9+).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError(f"not Prometheus text: {line!r}")
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def scrape(http: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"{http}/metrics", timeout=5) as r:
        return parse_metrics(r.read().decode())


def buckets(m, name: str) -> list[tuple[float, float]]:
    out = []
    for (n, labels), v in m.items():
        if n == f"{name}_bucket" and labels:
            le = re.search(r'le="([^"]+)"', labels).group(1)
            out.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(out)


def phase_mean(before, after, phase: str) -> float:
    """Mean seconds a tick spent in `phase` between two scrapes (0 when no tick ran)."""
    key = f'{{phase="{phase}"}}'
    total = after.get(("arena_tick_phase_seconds_sum", key), 0.0) - before.get(("arena_tick_phase_seconds_sum", key), 0.0)
    ticks = after.get(("arena_tick_phase_seconds_count", key), 0.0) - before.get(("arena_tick_phase_seconds_count", key), 0.0)
    return total / ticks if ticks > 0 else 0.0


def replicate_cpu_us(before, after) -> float:
    """Mean CPU microseconds building snapshots took a tick between two scrapes, by every
    thread that built (0 when no tick ran)."""
    key = '{phase="replicate"}'
    cpu = after.get(("arena_replication_cpu_microseconds_total", ""), 0.0) - before.get(
        ("arena_replication_cpu_microseconds_total", ""), 0.0)
    ticks = after.get(("arena_tick_phase_seconds_count", key), 0.0) - before.get(("arena_tick_phase_seconds_count", key), 0.0)
    return cpu / ticks if ticks > 0 else 0.0


def quantile(before, after, name: str, q: float) -> float:
    """The q-quantile of what a histogram recorded between two scrapes, interpolated linearly
    inside its bucket (the upper edge for the open +Inf bucket)."""
    b0 = dict(buckets(before, name))
    edges = buckets(after, name)
    counts = [(le, v - b0.get(le, 0.0)) for le, v in edges]
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in counts:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
            return prev_le + frac * (le - prev_le)
        prev_le, prev_c = le, c
    return prev_le


def stat_cpu_s(stat: Path, children: bool) -> float:
    """User + system CPU seconds from a `stat` file of /proc, with those of reaped children."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15 if children else 13]) / CLK_TCK


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat"), children=True)


def threads_cpu_s(pid: int) -> dict[str, float]:
    """User + system CPU seconds of a process's live threads, summed by name with its number
    dropped (`arena-rep-1` and `arena-rep-2` are `arena-rep`)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789").rstrip("-")
            cpu = stat_cpu_s(task / "stat", children=False)
        except OSError:
            continue  # the thread ended meanwhile
        out[name] = out.get(name, 0.0) + cpu
    return out


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def udp_drops() -> dict[str, tuple[int, int]]:
    """Every UDP socket's local port and the datagrams the kernel dropped for it, by inode."""
    out = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            out[f[9]] = (int(f[1].rsplit(":", 1)[1], 16), int(f[-1]))
    return out


def drops_between(before: dict, after: dict, server_port: int) -> tuple[int, int]:
    """Datagrams dropped between two readings: on the server's port, and on every other socket."""
    server = bots = 0
    for inode, (port, n) in after.items():
        d = n - before.get(inode, (port, 0))[1]
        if port == server_port:
            server += d
        else:
            bots += d
    return server, bots


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus] + argv
    return argv


def wait_for(pred, timeout: float, every: float = 0.25) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(every)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="100,250,500,1000,2000", help="bot counts, comma separated")
    ap.add_argument("--npcs", type=int, default=5000)
    ap.add_argument("--tick-rate", type=int, default=30)
    ap.add_argument("--ramp", type=float, default=100.0, help="new bot connections per second")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds measured once all bots are in")
    ap.add_argument("--idle-secs", type=float, default=15.0, help="seconds measured with no bots first")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after the last connect before measuring")
    ap.add_argument("--behaviour", default="wander=6,chase=3,idle=1")
    ap.add_argument("--server-cpus", default=None, help="taskset CPU list for the server, e.g. 0 or 0-7")
    ap.add_argument("--bot-cpus", default=None, help="taskset CPU list for the bots, e.g. 1 or 8-15")
    ap.add_argument("--http-port", type=int, default=18080)
    ap.add_argument("--wt-port", type=int, default=14433)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stop-after-fail", type=int, default=1,
                    help="stop after this many steps in a row are not held (0: run them all)")
    ap.add_argument("--server-flag", action="append", default=[], help="extra server flag (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--server-bin", type=Path, default=None, help="another arena-server binary (A/B runs)")
    ap.add_argument("--bots-bin", type=Path, default=None, help="another arena-bots binary (A/B runs)")
    ap.add_argument("--bots-flag", action="append", default=[],
                    help="extra arena-bots flag (repeatable), e.g. --bots-flag=--bots-per-endpoint=1")
    ap.add_argument("--bots-nice", type=int, default=0,
                    help="run the bots at this nice value: 19 lets them take only what the server leaves, "
                         "as clients on other machines would (the issue's figures use 0: equal shares)")
    args = ap.parse_args()

    steps = [int(s) for s in args.steps.split(",") if s]
    if not args.no_build:
        # The production profile, as a deployment builds it (Cargo.toml).
        subprocess.run(["cargo", "build", "--profile", "production", "-q", "-p", "arena-server",
                        "-p", "arena-client-sim"], cwd=ROOT, check=True)
    server_bin = args.server_bin or ROOT / "target/production/arena-server"
    bots_bin = args.bots_bin or ROOT / "target/production/arena-bots"
    http = f"http://127.0.0.1:{args.http_port}"
    budget = 1.0 / args.tick_rate
    work = Path(tempfile.mkdtemp(prefix="arena-capacity-"))
    server_log = open(work / "server.log", "w")
    server = subprocess.Popen(
        pinned(args.server_cpus, [
            str(server_bin), "--wt-bind", f"127.0.0.1:{args.wt_port}", "--http-bind", f"127.0.0.1:{args.http_port}",
            "--npcs", str(args.npcs), "--tick-rate", str(args.tick_rate), "--seed", str(args.seed),
            "--max-clients", str(max(steps) + 100), "--stats-interval", "5s", "--log", "info",
            *args.server_flag,
        ]),
        stdout=server_log, stderr=subprocess.STDOUT, cwd=ROOT)
    rows = []
    try:
        if not wait_for(lambda: scrape(http) is not None, 30):
            print(f"server did not come up; log in {work / 'server.log'}", file=sys.stderr)
            return 1
        time.sleep(2.0)  # the NPC world built and ticking: the idle baseline
        base_rss = proc_rss(server.pid)
        # The floor: the same tick figures with no bot at all (a noisy or shared machine shows
        # its scheduling hiccups here, before any client is involved).
        before = scrape(http)
        time.sleep(args.idle_secs)
        after = scrape(http)
        name = "arena_tick_duration_seconds"
        floor = {q: quantile(before, after, name, q) * 1e3 for q in (0.5, 0.99)}
        print(f"# capacity: {args.npcs} NPCs at {args.tick_rate} Hz, server cpus {args.server_cpus or 'any'}, "
              f"bot cpus {args.bot_cpus or 'any'}, bots nice {args.bots_nice}, {os.cpu_count()} CPUs; idle server RSS {base_rss / 2**20:.1f} MiB; "
              f"idle tick p50 {floor[0.5]:.2f} ms, p99 {floor[0.99]:.2f} ms over {args.idle_secs:.0f} s "
              f"(held needs p99 < {budget / 3 * 1e3:.1f} ms)")
        rows.append({"idle": True, "tick_p50_ms": floor[0.5], "tick_p99_ms": floor[0.99], "server_rss_mib": base_rss / 2**20})
        header = ("| bots | held | tick p50 ms | tick p99 ms | tick max ms | server CPU % | CPU %/client | RSS MiB "
                  "| RSS/client KiB | down B/bot/s | packets/bot/s down / up | snapshots Hz mean / worst | corrections | UDP drops server / bots "
                  "| bots CPU % | CPU %/bot | bots RSS/bot KiB | replicate us/client |")
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        fails_in_row = 0
        for n in steps:
            row = run_step(args, n, http, server.pid, bots_bin, budget, base_rss, work)
            rows.append(row)
            print(format_row(row), flush=True)
            print(format_threads(row), flush=True)
            fails_in_row = 0 if row["held"] else fails_in_row + 1
            if args.stop_after_fail and fails_in_row >= args.stop_after_fail:
                print(f"# stopped: {fails_in_row} step(s) in a row not held", flush=True)
                break
            # Let every session end before the next step.
            wait_for(lambda: scrape(http)[("arena_clients_connected", "")] == 0, 30)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()
    overruns = [l for l in (work / "server.log").read_text().splitlines() if "longer than its interval" in l]
    if overruns:
        print(f"# {len(overruns)} tick overrun lines in the server log; the last:\n#   {overruns[-1][:300]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"# logs and reports in {work}")
    return 0


def run_step(args, n: int, http: str, server_pid: int, bots_bin: Path, budget: float, base_rss: int, work: Path) -> dict:
    ramp_s = n / args.ramp
    duration = ramp_s + args.settle + args.hold + 2.0
    report = work / f"bots-{n}.json"
    # `nice` and `taskset` exec the bots, so the process measured is the bots'.
    niced = ["nice", "-n", str(args.bots_nice)] if args.bots_nice else []
    bots = subprocess.Popen(
        niced + pinned(args.bot_cpus, [
            str(bots_bin), "--server", http, "--bots", str(n), "--ramp", str(args.ramp),
            "--duration", f"{duration:.1f}s", "--seed", str(args.seed), "--behaviour", args.behaviour,
            "--report", str(report), "--no-progress", "--log", "error", *args.bots_flag,
        ]),
        stdout=open(work / f"bots-{n}.out", "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    # Everyone in (or the ramp plus a margin gone by), then settle.
    wait_for(lambda: scrape(http)[("arena_clients_connected", "")] >= n, ramp_s + 15)
    time.sleep(args.settle)
    before = scrape(http)
    cpu0, bots_cpu0, t0 = proc_cpu_s(server_pid), proc_cpu_s(bots.pid), time.monotonic()
    threads0 = threads_cpu_s(server_pid)
    drops0 = udp_drops()
    tick_max, rss, bots_rss, clients_min = 0.0, 0, 0, n
    while time.monotonic() - t0 < args.hold:
        time.sleep(1.0)
        m = scrape(http)
        tick_max = max(tick_max, m.get(("arena_tick_duration_max_seconds", ""), 0.0))
        clients_min = min(clients_min, int(m[("arena_clients_connected", "")]))
        rss = max(rss, proc_rss(server_pid))
        bots_rss = max(bots_rss, proc_rss(bots.pid))
    after = scrape(http)
    server_drops, bots_drops = drops_between(drops0, udp_drops(), args.wt_port)
    wall = time.monotonic() - t0
    cpu = (proc_cpu_s(server_pid) - cpu0) / wall * 100
    threads = {k: (v - threads0.get(k, 0.0)) / wall * 100 for k, v in threads_cpu_s(server_pid).items()}
    bots_cpu = (proc_cpu_s(bots.pid) - bots_cpu0) / wall * 100
    try:
        bots.wait(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        bots.kill()
        bots.wait()
    rep = json.loads(report.read_text()) if report.exists() else {}
    name = "arena_tick_duration_seconds"
    p50, p99 = quantile(before, after, name, 0.50), quantile(before, after, name, 0.99)
    worst = rep.get("snapshots_per_bot_hz_min", 0.0)
    held = (
        p99 < budget / 3
        and worst >= 0.95 * args.tick_rate
        and rep.get("bots_connected", 0) == n
        and rep.get("bots_failed", 1) == 0
        and rep.get("bots_disconnected", 1) == 0
        and rep.get("reconnects", 1) == 0
        and clients_min >= n
    )
    return {
        "bots": n,
        "held": held,
        "tick_p50_ms": p50 * 1e3,
        "tick_p99_ms": p99 * 1e3,
        "tick_max_ms": tick_max * 1e3,
        "server_cpu_pct": cpu,
        "server_cpu_pct_per_client": cpu / max(n, 1),
        "server_rss_mib": rss / 2**20,
        "rss_per_client_kib": (rss - base_rss) / max(n, 1) / 1024,
        "down_bytes_per_bot_per_s": rep.get("down_bytes_per_bot_per_s", 0.0),
        # UDP datagrams a bot read and sent a second (QUIC packets, the handshake's included).
        "packets_down_per_bot_hz": rep.get("packets_down_per_bot_hz", 0.0),
        "packets_up_per_bot_hz": rep.get("packets_up_per_bot_hz", 0.0),
        "snapshots_hz_mean": rep.get("snapshots_per_bot_hz", 0.0),
        "snapshots_hz_worst": worst,
        "corrections": rep.get("prediction_corrections", 0),
        "bots_cpu_pct": bots_cpu,
        "bots_cpu_pct_per_bot": bots_cpu / max(n, 1),
        "bots_rss_per_bot_kib": bots_rss / max(n, 1) / 1024,
        "replicate_us_per_client": phase_mean(before, after, "replicate") * 1e6 / max(n, 1),
        # Building snapshots' CPU a client a tick, beside the phase's wall time above: the gap
        # is the time the builders waited for a core.
        "replicate_cpu_us_per_client": replicate_cpu_us(before, after) / max(n, 1),
        # A replication helper lives for one phase: one caught alive would count its whole
        # CPU time in this window.
        "server_threads_cpu_pct": {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
                                   if v >= 0.5 and k != "arena-rep"},
        "udp_drops_server": server_drops,
        "udp_drops_bots": bots_drops,
        "clients_min": clients_min,
        "bots_failed": rep.get("bots_failed"),
        "bots_disconnected": rep.get("bots_disconnected"),
        "reconnects": rep.get("reconnects"),
        "slow_consumer_drops": after.get(("arena_snapshots_dropped_slow_consumer_total", ""), 0)
        - before.get(("arena_snapshots_dropped_slow_consumer_total", ""), 0),
        "inputs_late": after.get(("arena_inputs_late_total", ""), 0) - before.get(("arena_inputs_late_total", ""), 0),
    }


def format_row(r: dict) -> str:
    why = []
    if not r["held"]:
        if r["clients_min"] < r["bots"]:
            why.append(f"{r['clients_min']} in")
        if r["bots_failed"] or r["bots_disconnected"] or r["reconnects"]:
            why.append(f"{r['bots_failed']} failed/{r['bots_disconnected']} dropped/{r['reconnects']} re")
    held = "yes" if r["held"] else "no" + (f" ({', '.join(why)})" if why else "")
    return (f"| {r['bots']} | {held} | {r['tick_p50_ms']:.2f} | {r['tick_p99_ms']:.2f} | {r['tick_max_ms']:.1f} "
            f"| {r['server_cpu_pct']:.0f} | {r['server_cpu_pct_per_client']:.3f} | {r['server_rss_mib']:.0f} "
            f"| {r['rss_per_client_kib']:.1f} "
            f"| {r['down_bytes_per_bot_per_s']:.0f} | {r['packets_down_per_bot_hz']:.1f} / {r['packets_up_per_bot_hz']:.1f} "
            f"| {r['snapshots_hz_mean']:.1f} / {r['snapshots_hz_worst']:.1f} "
            f"| {r['corrections']} | {r['udp_drops_server']} / {r['udp_drops_bots']} | {r['bots_cpu_pct']:.0f} | {r['bots_cpu_pct_per_bot']:.3f} "
            f"| {r['bots_rss_per_bot_kib']:.0f} | {r['replicate_us_per_client']:.1f} |")


def format_threads(r: dict) -> str:
    """The server's CPU by thread, for the row above: the network side (`tokio-rt-worker`), the
    simulation with its share of building snapshots (`arena-sim`) and the rest; then what
    building snapshots took, every builder together."""
    parts = ", ".join(f"{k} {v:.1f}%" for k, v in r["server_threads_cpu_pct"].items())
    return (f"#   {r['bots']} bots: server threads' CPU (% of a core): {parts}; building snapshots "
            f"{r['replicate_cpu_us_per_client']:.1f} us CPU a client a tick")


if __name__ == "__main__":
    sys.exit(main())
