#!/usr/bin/env python3
"""Journal benchmark: group commit vs fio, the cost of `ack = "journaled"` over HTTP, and the
drain of a backlog into Redis vs redis-benchmark, measured in the same run.

1. Group commit: `cargo bench --bench journal` (appenders × records per append, 600-byte
   records) beside `fio --rw=write --fdatasync=1 --file_append=1` at the bytes weir wrote per
   fdatasync, both in a directory on the same disk. Ratio: weir's fdatasyncs/s ÷ fio's.
2. HTTP into `blackhole`, single events and 100-event batches with wrk: `ack = "journaled"`
   ÷ `ack = "received"`; the p99 journaling adds, beside fio's p99 fdatasync latency at the
   request's write size.
3. Drain: 1 M events posted while Redis is down (journaled), then Redis started: events/s
   from the first XADD to the last ÷ redis-benchmark -P 16 XADD of weir's entry.

Rounds alternate the servers and every figure is the median over the rounds.
Usage: bench/journal.py [--rounds 3] [--duration 10] [--backlog 1000000]
Installs fio and wrk with apt-get when missing.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/http.py would shadow the standard library's http package.
_here = sys.path.pop(0)
import http.client  # noqa: E402

sys.path.insert(0, _here)
from common import ROOT, free_port, stop, wait_port, wrk  # noqa: E402

RECORD = 600


def fio(workdir, block, seconds):
    directory = Path(workdir) / "fio"
    directory.mkdir(exist_ok=True)
    out = subprocess.run(
        ["fio", "--name=journal", f"--directory={directory}", "--rw=write", f"--bs={block}", "--size=2g",
         "--file_append=1", "--fdatasync=1", f"--runtime={seconds}", "--time_based", "--output-format=json"],
        check=True, capture_output=True, text=True,
    ).stdout
    job = json.loads(out)["jobs"][0]
    shutil.rmtree(directory)
    percentiles = job["sync"]["lat_ns"]["percentile"]
    return {"iops": job["write"]["iops"], "sync_p99_ms": percentiles["99.000000"] / 1e6}


def group_commit(directory, appenders, records, seconds):
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "journal", "--", "--dir", str(directory), "--appenders",
         str(appenders), "--records", str(records), "--size", str(RECORD), "--seconds", str(seconds)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    shutil.rmtree(directory)
    return json.loads(out.strip().splitlines()[-1])


def blackhole_flow(path, ack, listen):
    path.write_text(f"""
[sources.http]
type = "http"
[sources.http.config]
ack = "{ack}"
[sources.http.config.settings]
listen = "{listen}"
maxBatchSize = 100

[destinations.blackhole]
type = "blackhole"
[destinations.blackhole.config]
# Memory mode answers before anything is sent: a deep queue keeps it from answering 503.
queueMax = 1000000
""")
    return path


def serve(flow, workdir):
    return subprocess.Popen([str(ROOT / "target/release/weir"), "serve", "--config", str(flow)], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})



def http_round(ack, workdir, bodies, duration):
    port = free_port()
    run_dir = workdir / f"http-{ack}-{time.monotonic_ns()}"
    run_dir.mkdir()
    process = serve(blackhole_flow(run_dir / "flow.toml", ack, f"127.0.0.1:{port}"), run_dir)
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/collect"
        wrk(url, bodies["single"], 2, 64, workdir)
        single = wrk(url, bodies["single"], duration, 64, workdir)
        batch = wrk(url, bodies["batch"], duration, 64, workdir)
    finally:
        stop(process)
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"single": single, "batch": batch}


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def drain(workdir, backlog, event):
    redis_port, http_port = free_port(), free_port()
    run_dir = workdir / f"drain-{time.monotonic_ns()}"
    run_dir.mkdir()
    flow = run_dir / "flow.toml"
    flow.write_text(f"""
[sources.http]
type = "http"
[sources.http.config.settings]
listen = "127.0.0.1:{http_port}"
maxBatchSize = 100

[destinations.redis]
type = "redis"
[destinations.redis.config]
retry = {{ retryDelay = 20, maxRetryDelay = 100 }}
[destinations.redis.config.settings.redis]
url = "redis://127.0.0.1:{redis_port}"
streamKey = "bench:drain"
""")
    process = serve(flow, run_dir)
    server = None
    try:
        wait_port(http_port)
        body = json.dumps([event] * 100)
        connection = http.client.HTTPConnection("127.0.0.1", http_port)
        for _ in range(backlog // 100):
            connection.request("POST", "/collect", body, {"content-type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"answered {response.status}")
        server = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(run_dir)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(redis_port)
        first = None
        deadline = time.time() + 600
        while time.time() < deadline:
            length = int(redis_cli(redis_port, "XLEN", "bench:drain") or 0)
            now = time.monotonic()
            if length > 0 and first is None:
                first = (now, length)
            if length >= backlog:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"drained only {length} of {backlog}")
        rate = (length - first[1]) / (now - first[0])
        stored = redis_cli(redis_port, "XRANGE", "bench:drain", "-", "+", "COUNT", "1").splitlines()[-1]
        reference = subprocess.run(
            ["redis-benchmark", "-p", str(redis_port), "-n", "500000", "-c", "50", "-P", "16", "-q",
             "XADD", "bench:reference", "*", "event", stored],
            check=True, capture_output=True, text=True,
        ).stdout
        reference = float(reference.split("requests per second")[0].split()[-1])
    finally:
        stop(process)
        if server is not None:
            stop(server)
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"drain": rate, "reference": reference}


def median(rounds, *path):
    values = []
    for value in rounds:
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    for tool, package in [("fio", "fio"), ("wrk", "wrk")]:
        if shutil.which(tool) is None:
            subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "journal", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)
    template = subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--", "--print-template"],
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    event = json.loads(template)

    # On the disk the journal lives on (the repository's), not a tmpfs /tmp.
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as tmp:
        tmp = Path(tmp)
        bodies = {"single": tmp / "single.json", "batch": tmp / "batch.json"}
        bodies["single"].write_text(template)
        bodies["batch"].write_text("[" + ",".join([template] * 100) + "]")
        shapes = [(1, 1), (64, 1), (16, 100)]
        commits = {shape: [] for shape in shapes}
        https = {"journaled": [], "received": []}
        drains = []
        for number in range(args.rounds):
            for appenders, records in shapes:
                weir = group_commit(tmp / "journal", appenders, records, args.duration)
                reference = fio(tmp, round(weir["bytes_per_commit"]), args.duration)
                commits[(appenders, records)].append({**weir, "fio": reference})
                print(f"round {number + 1} commit {appenders}x{records}: {json.dumps(commits[(appenders, records)][-1])}",
                      file=sys.stderr)
            for ack in ["journaled", "received"]:
                https[ack].append(http_round(ack, tmp, bodies, args.duration))
                print(f"round {number + 1} http {ack}: {json.dumps(https[ack][-1])}", file=sys.stderr)
            drains.append(drain(tmp, args.backlog, event))
            print(f"round {number + 1} drain: {json.dumps(drains[-1])}", file=sys.stderr)
        single_write = fio(tmp, len(template) + 60, args.duration)

    print(f"\n{args.rounds} rounds, medians; {args.duration} s per measurement; {os.cpu_count()} cores shared by "
          "client, server and disk\n")
    print("| group commit | records/s | fdatasyncs/s | bytes per fdatasync | fio fdatasyncs/s at that size | ÷ fio | append p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for appenders, records in shapes:
        rounds = commits[(appenders, records)]
        ratio = statistics.median(r["commits_per_s"] / r["fio"]["iops"] for r in rounds)
        print(f"| {appenders} appenders × {records} records | {median(rounds, 'records_per_s'):,.0f} | "
              f"{median(rounds, 'commits_per_s'):,.0f} | {median(rounds, 'bytes_per_commit'):,.0f} | "
              f"{median(rounds, 'fio', 'iops'):,.0f} | {ratio:.2f} | {median(rounds, 'p99_ms'):.2f} |")
    print("\n| HTTP → blackhole (wrk -c64) | journaled req/s | received req/s | ÷ | journaled p99 ms | received p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for workload, key in [("single event", "single"), ("100-event batch", "batch")]:
        journaled, received = median(https["journaled"], key, "rps"), median(https["received"], key, "rps")
        print(f"| {workload} | {journaled:,.0f} | {received:,.0f} | {journaled / received:.2f} | "
              f"{median(https['journaled'], key, 'p99'):.2f} | {median(https['received'], key, 'p99'):.2f} |")
    added = median(https["journaled"], "single", "p99") - median(https["received"], "single", "p99")
    print(f"\np99 added by journaling (single events): {added:.2f} ms; fio p99 fdatasync at "
          f"{len(template) + 60} B: {single_write['sync_p99_ms']:.2f} ms "
          f"({added / single_write['sync_p99_ms']:.1f}× fio's)")
    drain_rate, reference = median(drains, "drain"), median(drains, "reference")
    print(f"\ndrain of a {args.backlog:,}-event backlog into Redis: {drain_rate:,.0f} events/s; "
          f"redis-benchmark -P 16 XADD of the same entry: {reference:,.0f}/s; ratio {drain_rate / reference:.2f}")


if __name__ == "__main__":
    main()
