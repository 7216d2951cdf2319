#!/usr/bin/env python3
"""Events per second into a local RudderStack data plane: weir against RudderStack's official
Node SDK, the same run, the same data plane.

  * data plane: bench/rudderstack-reference/dataplane.js (Node), on a loopback port; it
    un-gzips and counts messages.
  * reference: bench/rudderstack-reference/producer.js, `@rudderstack/rudder-sdk-node`
    3.0.13 (installed with npm here) sending the track call walkerOS's destination makes for
    the benchmark event, with the SDK's defaults (flushAt 20, gzip, one request at a time).
  * weir from the collector: `cargo bench --bench collector` with a `rudderstack` destination
    with the same defaults: enrichment, mapping, the walkerOS call algorithm, the SDK's
    message form, batching, gzip, POST, acknowledgement of every event.

Each run is checked against the data plane's count. Rounds alternate; medians are reported.

Usage: bench/rudderstack.py [--rounds 3] [--events 200000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import socket
from pathlib import Path

from common import ROOT, free_port, wait_port

REFERENCE = ROOT / "bench" / "rudderstack-reference"


def count(port):
    # A raw request: bench/http.py shadows the standard library's `http` package here.
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"GET /count HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := connection.recv(4096):
            reply += chunk
    return int(reply.split(b"\r\n\r\n", 1)[1])


def flow(port, path):
    path.write_text(f"""
[destinations.rudderstack]
type = "rudderstack"
[destinations.rudderstack.config.settings]
writeKey = "bench-write-key"
dataPlaneUrl = "http://127.0.0.1:{port}"
""")
    return path


def run(command, cwd, port, events):
    before = count(port)
    out = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    received = count(port) - before
    if received != events:
        raise RuntimeError(f"{command[0]}: the data plane received {received} of {events} messages")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    # Whole chunks of the collector benchmark (2 producers × 500) and of flushAt (20).
    events = args.events - args.events % 1000
    if not (REFERENCE / "node_modules" / "@rudderstack" / "rudder-sdk-node").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=REFERENCE, check=True)
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        plane = subprocess.Popen(["node", "dataplane.js", str(port)], cwd=REFERENCE)
        try:
            wait_port(port)
            weir_flow = flow(port, Path(tmp) / "rudderstack.toml")
            rounds = []
            for number in range(args.rounds):
                reference = run(["node", "producer.js", f"http://127.0.0.1:{port}", str(events)], REFERENCE, port,
                                events)
                weir = run(["cargo", "bench", "--quiet", "--bench", "collector", "--", "--flow", str(weir_flow),
                            "--events", str(events)], ROOT, port, events)
                rounds.append({"reference": reference["events_per_second"], "reference_rss": reference["peak_rss_mib"],
                               "weir": weir["events_per_second"], "weir_rss": weir["peak_rss_mib"]})
                print(f"round {number + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
        finally:
            plane.terminate()
            plane.wait(timeout=20)

    median = lambda key: statistics.median(r[key] for r in rounds)
    reference = median("reference")
    print(f"\n{args.rounds} rounds, medians; {events} events each; {os.cpu_count()} cores shared by everything\n")
    print("| sender | events/s | ÷ Node SDK | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    print(f"| RudderStack Node SDK 3.0.13 (reference) | {reference:,.0f} | 1.00 | {median('reference_rss'):.0f} |")
    print(f"| weir from the collector (in-process) | {median('weir'):,.0f} | {median('weir') / reference:.2f} "
          f"| {median('weir_rss'):.0f} |")


if __name__ == "__main__":
    main()
