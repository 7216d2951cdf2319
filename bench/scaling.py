#!/usr/bin/env python3
"""How weir's cost grows with its work (issue: performance, item 5). Each row is one run of
a fresh `weir serve` (release build) on a flow made for it; nothing else runs meanwhile.

Throughput rows: wrk (`-t1 -c32`, 2 s warm-up, then DURATION s) POSTs batches into an HTTP
source (`ack = "journaled"`, the default) feeding `blackhole` destinations; reported: events/s,
the CPU weir took (cores, from /proc/PID/stat over the measured run), and its peak RSS
(VmHWM). One parameter moves per curve, the others stay at the base case (1 destination,
300-byte events, 100 events per request):

- destinations: 1, 2, 4, 8;
- event size: 300 B, 3 KB, 30 KB (a `data.text` field padded to size);
- events per request: 1, 10, 100, 1000.

Backlog rows: the destination is Redis on a port where nothing listens, so nothing is
delivered and every event stays held; 1000-event batches are posted until 10 k, 100 k and
1 M events are held, and weir's RSS (VmRSS, after 1 s) is read at each mark. Twice: held in
the journal (the default), and held in memory (`journal.enabled = false`, `queueMax` raised
to 1 M).

The events are compact JSON, as walkerOS's clients send them (JSON.stringify).
Usage: bench/scaling.py [--duration 8] [--only throughput|backlog]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/http.py would shadow the standard library's http package.
_here = sys.path.pop(0)
import http.client  # noqa: E402

sys.path.insert(0, _here)
from common import ROOT, cpu_seconds, free_port, peak_rss_mib, rss_mib, stop, wait_port, wrk  # noqa: E402

BASE_EVENT = {
    "name": "page view",
    "data": {"title": "Home", "url": "https://shop.example/", "text": ""},
    "context": {"shopping": ["browse", 0]},
    "globals": {"pagegroup": "home", "lang": "en"},
    "user": {"id": "us3r", "device": "c00k13", "session": "s3ss10n"},
    "consent": {"functional": True},
    "trigger": "load",
}


def event_of(size):
    """An event whose compact JSON is `size` bytes."""
    event = json.loads(json.dumps(BASE_EVENT))
    base = len(json.dumps(event, separators=(",", ":")))
    event["data"]["text"] = "x" * max(0, size - base)
    return event


def flow(port, destinations=1, journal=True, stalled_redis=None):
    text = f"""
[sources.http]
type = "http"
[sources.http.config.settings]
listen = "127.0.0.1:{port}"
maxBatchSize = 1000
maxBodyBytes = 67108864
"""
    if not journal:
        # Without a journal a request is answered once its events are queued.
        text += '[sources.http.config]\nack = "received"\n'
    text += '\n[journal]\nmaxBytes = 8589934592\n' if journal else '\n[journal]\nenabled = false\n'
    if stalled_redis is not None:
        # Held in memory: the queue itself must take the whole backlog.
        queue = "" if journal else "queueMax = 1000000\n"
        text += f"""
[destinations.stalled]
type = "redis"
[destinations.stalled.config]
{queue}retry = {{ retryDelay = 1000, maxRetryDelay = 1000 }}
[destinations.stalled.config.settings.redis]
url = "redis://127.0.0.1:{stalled_redis}"
streamKey = "bench:stalled"
"""
    for index in range(destinations):
        text += f'\n[destinations.blackhole{index}]\ntype = "blackhole"\n'
    return text


def serve(flow_text, workdir):
    path = workdir / "flow.toml"
    path.write_text(flow_text)
    return subprocess.Popen(
        [str(ROOT / "target/release/weir"), "serve", "--config", str(path), "--admin-listen", "off"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"},
    )





def throughput(workdir, duration, destinations=1, size=300, batch=100):
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    port = free_port()
    process = serve(flow(port, destinations), run_dir)
    try:
        wait_port(port)
        events = [event_of(size)] * batch
        body = run_dir / "body.json"
        body.write_text(json.dumps(events[0] if batch == 1 else events, separators=(",", ":")))
        url = f"http://127.0.0.1:{port}/collect"
        wrk(url, body, 2, 32, run_dir)
        before = cpu_seconds(process.pid)
        result = wrk(url, body, duration, 32, run_dir)
        cores = (cpu_seconds(process.pid) - before) / duration
        rss = peak_rss_mib(process.pid)
    finally:
        stop(process)
    return {"events": result["rps"] * batch, "requests": result["rps"], "cores": cores, "rss": rss,
            "p99": result["p99"]}


def backlog(workdir, journal, marks=(10_000, 100_000, 1_000_000)):
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    port = free_port()
    process = serve(flow(port, destinations=0, journal=journal, stalled_redis=free_port()), run_dir)
    out = {}
    try:
        wait_port(port)
        body = json.dumps([event_of(300)] * 1000, separators=(",", ":"))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        held = 0
        for mark in marks:
            while held < mark:
                connection.request("POST", "/collect", body, {"content-type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"answered {response.status} with {held} events held")
                held += 1000
            time.sleep(1)
            out[mark] = rss_mib(process.pid)
            print(f"  {'journal' if journal else 'memory'}: {mark} held, RSS {out[mark]:.0f} MiB", file=sys.stderr)
    finally:
        stop(process)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--only", choices=["throughput", "backlog"])
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only != "backlog":
            rows = []
            for curve, values, key in [
                ("destinations", [1, 2, 4, 8], "destinations"),
                ("event size (B)", [300, 3_000, 30_000], "size"),
                ("events per request", [1, 10, 100, 1000], "batch"),
            ]:
                for value in values:
                    result = throughput(tmp, args.duration, **{key: value})
                    print(f"  {curve} {value}: {json.dumps(result)}", file=sys.stderr)
                    rows.append((curve, value, result))
            print(f"\nwrk -t1 -c32 -d{args.duration}s; {os.cpu_count()} cores shared by wrk and weir; "
                  "base: 1 blackhole, 300-byte events, 100 per request, ack = journaled\n")
            print("| curve | value | events/s | requests/s | weir CPU (cores) | p99 ms | peak RSS MiB |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for curve, value, r in rows:
                print(f"| {curve} | {value:,} | {r['events']:,.0f} | {r['requests']:,.0f} | {r['cores']:.2f} | "
                      f"{r['p99']:.1f} | {r['rss']:.0f} |")
        if args.only != "throughput":
            journaled = backlog(tmp, journal=True)
            memory = backlog(tmp, journal=False)
            print("\nbacklog (events held for a destination that cannot be reached; 300-byte events)\n")
            print("| events held | RSS MiB, held in the journal | RSS MiB, held in memory |")
            print("|---:|---:|---:|")
            for mark in journaled:
                print(f"| {mark:,} | {journaled[mark]:.0f} | {memory[mark]:.0f} |")


if __name__ == "__main__":
    main()
