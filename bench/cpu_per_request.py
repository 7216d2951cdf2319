#!/usr/bin/env python3
"""CPU time weir spends per request, for two builds side by side.

Throughput on two shared cores swings by ±15 % from one minute to the next; the CPU a server
spends per request swings far less, so this is how a change to the request path is judged.
Each round starts each binary on bench/blackhole.toml (ack = delivered, blackhole
destination), drives it with `wrk -t1 -c32` single-event POSTs for DURATION seconds, and
divides the process's user + system time over the run (/proc/PID/stat) by the requests
answered. Rounds alternate the binaries; the medians are reported.

Usage: bench/cpu_per_request.py BEFORE AFTER [--rounds 5] [--duration 5]
(e.g. a release build of the previous commit copied aside, and target/release/weir).
"""

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import ROOT, cpu_seconds, free_port, wait_port, wrk

EVENT = '{"name":"page view","data":{"title":"Home","url":"https://shop.example/"}}'



def measure(binary, duration, workdir):
    port = free_port()
    flow = workdir / "flow.toml"
    flow.write_text((ROOT / "bench/blackhole.toml").read_text())
    server = subprocess.Popen(
        [binary, "serve", "--config", str(flow), "--listen", f"127.0.0.1:{port}", "--admin-listen", "off"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        body = workdir / "event.json"
        body.write_text(EVENT)
        before = cpu_seconds(server.pid)
        result = wrk(f"http://127.0.0.1:{port}/collect", body, duration, 32, workdir)
        spent = cpu_seconds(server.pid) - before
        return result["rps"], spent * 1e6 / (result["rps"] * duration)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    # The servers run in a scratch directory: the binaries as given from here.
    args.before, args.after = os.path.abspath(args.before), os.path.abspath(args.after)
    figures = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            # Each round in the other order, so that neither always runs first.
            for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                rps, cpu = measure(getattr(args, name), args.duration, Path(workdir))
                figures[name].append((rps, cpu))
                print(f"round {round_ + 1} {name}: {rps:,.0f} req/s, {cpu:.1f} µs CPU a request", flush=True)
    for name, runs in figures.items():
        print(
            f"{name}: median {statistics.median(r for r, _ in runs):,.0f} req/s, "
            f"{statistics.median(c for _, c in runs):.1f} µs CPU a request"
        )


if __name__ == "__main__":
    main()
