#!/usr/bin/env python3
"""HTTP ingest benchmark: weir vs the walkerOS reference, measured in the same run.

Starts `weir serve` on bench/blackhole.toml (ack = delivered, blackhole destination) and the
walkerOS reference (bench/walkeros-reference: walkerOS's collector behind Express 5, answering
respond-first as walkerOS's express source does by default), each on a free loopback port,
and drives both with wrk: single-event POSTs and 100-event batch POSTs. Rounds alternate
between the two servers; every figure reported is the median over the rounds. Peak RSS is
VmHWM of the server process at the end of a round.

`--reference minimal` measures against the floor of weir's own stack instead:
examples/minimal_http.rs (tokio + hyper's HTTP/1 + mimalloc, reads the body, answers 200,
nothing else); `--reference durable` against the same server writing each body to a file
with group-committed fdatasync and parsing it as JSON before answering (`--durable FILE
--parse`): the floor of any server whose 200 means the events are on disk. Several
references may be given (`--reference minimal durable`). `--ack journaled` answers once the
events are on disk instead of delivered.

Usage: bench/http.py [--rounds 3] [--duration 10] [--connections 64] [--no-reference]
                     [--reference walkeros|minimal|durable ...] [--ack delivered|journaled]
Installs wrk (apt-get) and the reference's npm packages when missing.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, free_port, peak_rss_mib, stop, wait_port, wrk

EVENT = {
    "name": "page view",
    "data": {"title": "Home", "url": "https://shop.example/", "referrer": "https://search.example/?q=weir", "id": "/"},
    "context": {"shopping": ["browse", 0]},
    "globals": {"pagegroup": "home", "lang": "en"},
    "user": {"id": "us3r", "device": "c00k13", "session": "s3ss10n"},
    "consent": {"functional": True},
    "trigger": "load",
}


def start_weir(port, workdir, ack="delivered"):
    config = (ROOT / "bench/blackhole.toml").read_text().replace('\nack = "delivered"', f'\nack = "{ack}"')
    flow = workdir / "flow.toml"
    flow.write_text(config)
    process = subprocess.Popen(
        [str(ROOT / "target/release/weir"), "serve", "--config", str(flow), "--listen", f"127.0.0.1:{port}"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"},
    )
    wait_port(port)
    return process


def start_reference(port):
    process = subprocess.Popen(
        ["node", "server.mjs", str(port)], cwd=ROOT / "bench/walkeros-reference",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return process


def start_minimal(port, *options):
    process = subprocess.Popen(
        [str(ROOT / "target/release/examples/minimal_http"), f"127.0.0.1:{port}", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return process


REFERENCES = {
    "walkeros": "walkerOS reference",
    "minimal": "minimal hyper server",
    "durable": "minimal + fdatasync + JSON parse",
}



def measure(start, args, scripts, bodies):
    port = free_port()
    process = start(port)
    try:
        url = f"http://127.0.0.1:{port}/collect"
        # Warm-up, then the two workloads.
        wrk(url, bodies["single"], 2, args.connections, scripts)
        single = wrk(url, bodies["single"], args.duration, args.connections, scripts)
        batch = wrk(url, bodies["batch"], args.duration, args.connections, scripts)
        rss = peak_rss_mib(process.pid)
    finally:
        stop(process)
    return {"single": single, "batch": batch, "rss": rss}


def median(rounds, *path):
    values = []
    for r in rounds:
        value = r
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--reference", choices=list(REFERENCES), nargs="+", default=["walkeros"])
    parser.add_argument("--ack", choices=["delivered", "journaled"], default="delivered")
    args = parser.parse_args()
    references = [] if args.no_reference else args.reference

    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if {"minimal", "durable"} & set(references):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "minimal_http"], cwd=ROOT, check=True)
    if "walkeros" in references and not (ROOT / "bench/walkeros-reference/node_modules").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=ROOT / "bench/walkeros-reference", check=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bodies = {"single": tmp / "single.json", "batch": tmp / "batch.json"}
        bodies["single"].write_text(json.dumps(EVENT))
        bodies["batch"].write_text(json.dumps([EVENT] * 100))
        starters = {
            "walkeros": start_reference,
            "minimal": start_minimal,
            "durable": lambda port: start_minimal(port, "--durable", str(tmp / "durable.bin"), "--parse"),
        }
        rounds = {name: [] for name in ["weir", *references]}
        for round_number in range(args.rounds):
            weir_dir = tmp / f"weir-{round_number}"
            weir_dir.mkdir()
            rounds["weir"].append(measure(lambda port: start_weir(port, weir_dir, args.ack), args, tmp, bodies))
            print(f"round {round_number + 1} weir: {json.dumps(rounds['weir'][-1])}", file=sys.stderr)
            for name in references:
                (tmp / "durable.bin").unlink(missing_ok=True)
                rounds[name].append(measure(starters[name], args, tmp, bodies))
                print(f"round {round_number + 1} {REFERENCES[name]}: {json.dumps(rounds[name][-1])}", file=sys.stderr)

    single_bytes = len(json.dumps(EVENT))
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, medians, ack = {args.ack}; "
          f"event {single_bytes} B, batch 100 events; {os.cpu_count()} cores shared by client and server\n")
    print("| workload | server | req/s | events/s | p50 ms | p99 ms | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for workload, events in [("single event", 1), ("100-event batch", 100)]:
        key = "single" if events == 1 else "batch"
        for name, measured in rounds.items():
            rps = median(measured, key, "rps")
            label = "weir" if name == "weir" else REFERENCES[name]
            print(f"| {workload} | {label} | {rps:,.0f} | {rps * events:,.0f} | {median(measured, key, 'p50'):.2f} | "
                  f"{median(measured, key, 'p99'):.2f} | {median(measured, 'rss'):.0f} |")
    for name in references:
        for workload, key in [("single event", "single"), ("100-event batch", "batch")]:
            ratio = median(rounds["weir"], key, "rps") / median(rounds[name], key, "rps")
            print(f"\n{workload}: weir ÷ {REFERENCES[name]} = {ratio:.2f} (requests/s)")


if __name__ == "__main__":
    main()
