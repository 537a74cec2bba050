"""The replay viewer under abuse (BENCHMARKS.md, "The replay viewer under abuse").

python3 benches/viewer_abuse.py HOST PORT SERVER_PID RUN_ID ["Authorization: Bearer T\r\n"]

Against the viewer at HOST:PORT (the server process SERVER_PID, whose RSS and CPU it reads from
/proc): 10 clients ask for `frames?count=300` and never read (a 4 KiB receive buffer) for 10 s,
while a normal `meta` is timed; then they close, 40 more requests are fired and abandoned at
once, a `meta` is timed right after, and the server's CPU is watched until a 1 s window shows
under 0.05 s of it.
"""
import socket, sys, time, json, urllib.request, os
host, port, pid, rid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
hdr = sys.argv[5] if len(sys.argv) > 5 else ""
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def req(path):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{hdr}\r\n".encode())
    return s
def meta_time():
    t = time.time()
    r = urllib.request.Request(f"http://{host}:{port}/api/replays/{rid}/meta")
    if hdr: k, v = hdr.strip().split(": ", 1); r.add_header(k, v)
    try: urllib.request.urlopen(r, timeout=120).read()
    except Exception as e: return f"{e}"
    return f"{time.time() - t:.2f}s"
print(f"start rss {rss()} MB")
held = [req(f"/api/replays/{rid}/frames?from={1 + 150 * (i % 4)}&count=300") for i in range(10)]
peak = 0
for _ in range(10):
    time.sleep(1); peak = max(peak, rss())
print(f"10 non-readers: peak rss {peak} MB over 10 s, meta meanwhile {meta_time()}")
for s in held: s.close()
t0 = time.time()
for i in range(40):
    s = req(f"/api/replays/{rid}/frames?from={1 + 150 * (i % 4)}&count=300"); s.close()
print(f"40 fired and abandoned in {time.time() - t0:.2f} s")
print(f"meta right after: {meta_time()}")
t0 = time.time()
while True:
    c = cpu(); time.sleep(1); d = cpu() - c
    if d < 0.05 or time.time() - t0 > 120: break
print(f"busy {time.time() - t0:.1f} s after abandoning (last 1 s window {d:.2f} s CPU); rss {rss()} MB")
