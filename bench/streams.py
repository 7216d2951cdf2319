#!/usr/bin/env python3
"""Reading Redis Streams back: consumer throughput against a minimal XREADGROUP + XACK loop,
and XADD → SSE latency with many clients (benches/streams.rs does the measuring).

  * throughput: N entries of weir's benchmark event, read through a fresh group by the minimal
    loop (redis-rs, COUNT 100, XACK per batch), then by weir's `redis_stream` source into
    `blackhole` (decode, enrich, dispatch, acknowledgement, XACK). Ratio per round.
  * latency: a fresh `weir serve` per setting (`redis_stream` → `sse`), C SSE clients in the
    bench process, R events/s XADDed for S seconds carrying their send time; send → frame
    received, measured on 50 of the clients spread over the connection order. The same load
    against the minimal fan-out (examples/minimal_sse.rs: one task reads the group and writes
    each batch to every socket in turn) is the reference: weir's p99 ÷ its p99, and the cores
    the server and the load generator (the SSE readers and the XADD producer) took. And after quiet: one client, one event every 3 s
    (longer than the source's 1 s `block`), 5 of them.

Usage: bench/streams.py [--rounds 3] [--entries 200000] [--seconds 4]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, free_port, stop, wait_port

SETTINGS = [(100, 1_000), (1_000, 1_000), (100, 10_000), (1_000, 10_000)]
# After quiet: (clients, None) sends one event every IDLE_GAP_MS instead of a rate.
IDLE = (1, None)
IDLE_GAP_MS = 3000


def bench(*args):
    out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "streams", "--", *args], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def weir_flow(path, redis_port, http_port):
    path.write_text(f"""
[sources.http]
type = "http"
[sources.http.config.settings]
listen = "127.0.0.1:{http_port}"
[sources.ticks]
type = "redis_stream"
[sources.ticks.config.settings]
url = "redis://127.0.0.1:{redis_port}"
stream = "ticks"
group = "sse"
batchSize = 100
[destinations.hub]
type = "sse"
sources = ["ticks"]
""")
    return path


def latency_run(name, tmp, redis_port, clients, rate, seconds):
    """One latency run against a fresh server: weir (`redis_stream` → `sse`) or the minimal
    fan-out (examples/minimal_sse.rs), with the server's share of the cores added."""
    subprocess.run(["redis-cli", "-p", str(redis_port), "DEL", "ticks"], check=True, capture_output=True)
    http_port = free_port()
    if name == "weir":
        flow = weir_flow(tmp / "sse.toml", redis_port, http_port)
        command = [str(ROOT / "target/release/weir"), "serve", "--config", str(flow)]
    else:
        command = [str(ROOT / "target/release/examples/minimal_sse"), f"127.0.0.1:{http_port}",
                   f"redis://127.0.0.1:{redis_port}", "ticks"]
    process = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(http_port)
        time.sleep(0.5)
        load = (["--rate", str(rate), "--seconds", str(seconds)] if rate
                else ["--gap", str(IDLE_GAP_MS), "--seconds", "5"])
        result = bench("latency", "--url", f"redis://127.0.0.1:{redis_port}", "--sse",
                       f"http://127.0.0.1:{http_port}/v1/notifications/event-stream",
                       "--clients", str(clients), "--pid", str(process.pid), *load)
    finally:
        stop(process)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "weir", "--example", "minimal_sse"], cwd=ROOT,
                   check=True)
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "streams", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}"
        try:
            wait_port(port)
            throughput = []
            latency = {name: {setting: [] for setting in SETTINGS + [IDLE]} for name in ["weir", "minimal"]}
            for number in range(args.rounds):
                result = bench("throughput", "--url", url, "--entries", str(args.entries))
                throughput.append(result)
                print(f"round {number + 1} throughput: {json.dumps(result)}", file=sys.stderr)
                for clients, rate in SETTINGS + [IDLE]:
                    servers = ["weir", "minimal"] if rate else ["weir"]
                    for name in servers:
                        result = latency_run(name, tmp, port, clients, rate, args.seconds)
                        latency[name][(clients, rate)].append(result)
                        print(f"round {number + 1} latency {name}: {json.dumps(result)}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=20)

    median = lambda values: statistics.median(values)
    minimal = median(r["minimal_per_second"] for r in throughput)
    weir = median(r["weir_per_second"] for r in throughput)
    ratios = [r["weir_per_second"] / r["minimal_per_second"] for r in throughput]
    print(f"\n{args.rounds} rounds, medians; {os.cpu_count()} cores shared by everything\n")
    print("| consumer | entries/s | ÷ minimal loop |")
    print("|---|---:|---:|")
    print(f"| minimal XREADGROUP + XACK loop (reference) | {minimal:,.0f} | 1.00 |")
    print(f"| weir `redis_stream` → `blackhole` | {weir:,.0f} | **{median(ratios):.2f}** |")
    print()
    print("| SSE clients | events/s | frames/s | weir p50 ms | weir p99 ms | minimal p99 ms | weir ÷ minimal (p99, median of rounds) "
          "| frames received | cores: weir / minimal / load generator |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for clients, rate in SETTINGS:
        runs, floor = latency["weir"][(clients, rate)], latency["minimal"][(clients, rate)]
        received = median(r["samples"] / r["expected"] for r in runs)
        weir_p99, minimal_p99 = median(r["p99_ms"] for r in runs), median(r["p99_ms"] for r in floor)
        # The median of the rounds' ratios (each round runs both under the same conditions).
        ratio = median(w["p99_ms"] / max(m["p99_ms"], 1e-3) for w, m in zip(runs, floor))
        cores = (f"{median(r['server_cores'] for r in runs):.2f} / {median(r['server_cores'] for r in floor):.2f} / "
                 f"{median(r['load_generator_cores'] for r in runs):.2f}")
        print(f"| {clients:,} | {rate:,} | {clients * rate:,} | {median(r['p50_ms'] for r in runs):.1f} "
              f"| {weir_p99:.1f} | {minimal_p99:.1f} | {ratio:.2f} | {received:.1%} "
              f"(minimal {median(r['samples'] / r['expected'] for r in floor):.1%}) | {cores} |")
    runs = latency["weir"][IDLE]
    print()
    print(f"After quiet (one event every {IDLE_GAP_MS / 1000:g} s, 5 per round, 1 client): "
          f"p50 {median(r['p50_ms'] for r in runs):.1f} ms, "
          f"max {max(r['max_ms'] for r in runs):.1f} ms, "
          f"received {median(r['samples'] / r['expected'] for r in runs):.1%}")


if __name__ == "__main__":
    main()
