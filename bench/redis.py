#!/usr/bin/env python3
"""Redis destination benchmark: weir into Redis vs redis-benchmark XADD, in the same run.

Starts a private redis-server (no persistence) on a free loopback port, then per round:
  * redis-benchmark: XADD with weir's own stored event as the payload (same bytes),
    -c 50 -P 16 (pipeline depth 16, the usual redis-benchmark setting);
  * weir from the collector: `cargo bench --bench collector` (in-process: enrichment,
    mapping, XADD rendering, delivery machinery, pipelined XADD, acknowledgement);
  * weir over HTTP: `weir serve` into the same Redis, wrk with single events and with
    100-event batches, `ack = "journaled"` (answered once on disk; the issue's measure)
    or `--ack delivered` (answered once in Redis).
Every figure is the median over the rounds; ratios divide by redis-benchmark's median.
The stream is deleted between runs. Installs wrk when missing.

Usage: bench/redis.py [--rounds 3] [--events 500000] [--duration 10] [--ack journaled|delivered]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, collector, cpu_seconds, free_port, peak_rss_mib, wait_port, wrk



def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True).stdout


def flow(port, path, listen=None, ack="delivered"):
    text = f"""
[sources.http]
type = "http"
[sources.http.config]
ack = "{ack}"
[sources.http.config.settings]
maxBatchSize = 100
{f'listen = "{listen}"' if listen else ''}

[destinations.redis]
type = "redis"
[destinations.redis.config.settings.redis]
url = "redis://127.0.0.1:{port}"
streamKey = "bench:weir"
"""
    path.write_text(text)
    return path


def redis_benchmark(port, payload, requests):
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-n", str(requests), "-c", "50", "-P", "16", "-q",
         "XADD", "bench:reference", "*", "event", payload],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def drain(port):
    """Waits until weir has delivered what it holds (the stream stops growing), then empties
    the stream."""
    last = -1
    for _ in range(600):
        length = int(cli(port, "XLEN", "bench:weir").strip() or 0)
        if length == last:
            break
        last = length
        time.sleep(0.5)
    cli(port, "DEL", "bench:weir")



def http(port, server_pid, workdir, bodies, duration, ack):
    listen_port = free_port()
    flow_path = flow(port, workdir / "http.toml", listen=f"127.0.0.1:{listen_port}", ack=ack)
    process = subprocess.Popen([str(ROOT / "target/release/weir"), "serve", "--config", str(flow_path)],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_port(listen_port)
        url = f"http://127.0.0.1:{listen_port}/collect"
        wrk(url, bodies["single"], 2, 64, workdir)
        # With `ack = "journaled"` a request is answered before its events reach Redis, so
        # what counts is what is in the stream when the run ends (delivered within it).
        in_redis = lambda: int(cli(port, "XLEN", "bench:weir").strip() or 0) / duration
        drain(port)
        single = min(wrk(url, bodies["single"], duration, 64, workdir)["rps"], in_redis())
        drain(port)
        # Who takes the two cores during the batch run: weir, redis-server, and (the rest) wrk.
        before = cpu_seconds(process.pid), cpu_seconds(server_pid)
        batch = min(wrk(url, bodies["batch"], duration, 64, workdir)["rps"] * 100, in_redis())
        weir_cores = (cpu_seconds(process.pid) - before[0]) / duration
        redis_cores = (cpu_seconds(server_pid) - before[1]) / duration
        rss = peak_rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)
    cli(port, "DEL", "bench:weir")
    return {"single": single, "batch": batch, "rss": rss, "batch_weir_cores": weir_cores,
            "batch_redis_cores": redis_cores}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--ack", choices=["journaled", "delivered"], default="journaled")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            collector_flow = flow(port, tmp / "collector.toml")
            # weir's stored entry for the benchmark event: the reference writes the same bytes.
            collector(collector_flow, 1000, 16)
            stored = cli(port, "XRANGE", "bench:weir", "-", "+", "COUNT", "1").splitlines()[-1]
            cli(port, "DEL", "bench:weir")
            template = subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--", "--print-template"],
                                      cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
            bodies = {"single": tmp / "single.json", "batch": tmp / "batch.json"}
            bodies["single"].write_text(template)
            bodies["batch"].write_text("[" + ",".join([template] * 100) + "]")
            rounds = []
            for number in range(args.rounds):
                reference = redis_benchmark(port, stored, args.events)
                cli(port, "DEL", "bench:reference")
                from_collector = collector(collector_flow, args.events, 16)
                cli(port, "DEL", "bench:weir")
                over_http = http(port, server.pid, tmp, bodies, args.duration, args.ack)
                rounds.append({"reference": reference, "collector": from_collector["events_per_second"],
                               "collector_rss": from_collector["peak_rss_mib"], **{f"http_{k}": v for k, v in over_http.items()}})
                print(f"round {number + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=20)

    median = lambda key: statistics.median(r[key] for r in rounds)
    reference = median("reference")
    print(f"\n{args.rounds} rounds, medians; entry {len(stored)} B (weir's stored event), "
          f"redis-benchmark -c 50 -P 16; HTTP ack = {args.ack}; {os.cpu_count()} cores shared by everything\n")
    print("| path | events/s | ÷ redis-benchmark | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    print(f"| redis-benchmark XADD (reference) | {reference:,.0f} | 1.00 | |")
    for label, key, rss in [("weir from the collector (in-process)", "collector", "collector_rss"),
                            ("weir over HTTP, single events", "http_single", "http_rss"),
                            ("weir over HTTP, 100-event batches", "http_batch", "http_rss")]:
        print(f"| {label} | {median(key):,.0f} | {median(key) / reference:.2f} | {median(rss):.0f} |")
    weir_cores, redis_cores = median("http_batch_weir_cores"), median("http_batch_redis_cores")
    print(f"\n100-event batches over HTTP: weir took {weir_cores:.2f} cores, redis-server {redis_cores:.2f}, "
          f"wrk and the rest {os.cpu_count() - weir_cores - redis_cores:.2f} (of {os.cpu_count()})")


if __name__ == "__main__":
    main()
