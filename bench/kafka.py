#!/usr/bin/env python3
"""Kafka destination benchmark: weir into a Kafka-protocol broker vs a plain librdkafka
producer (Python's confluent-kafka), in the same run.

Starts a private tansu broker (memory storage) on a free loopback port, creates the topics,
then per round:
  * reference: bench/kafka-reference/producer.py sends N copies of the record weir makes of
    the benchmark event (same key, value bytes and headers), acks=all, idempotent, the same
    codec, linger and partitioner; msgs/s until the last delivery report;
  * weir from the collector: `cargo bench --bench collector` with a `kafka` destination
    (in-process: enrichment, mapping, record rendering, delivery machinery, produce, and the
    acknowledgement from each delivery report);
  * weir over HTTP: `weir serve`, wrk POSTing 100-event batches, `ack = "delivered"` (each
    answer waits for the broker's acknowledgement of its events).
Ratios divide by the reference's median. Uses the tansu and Python scripts/test.sh installs.

Usage: bench/kafka.py [--rounds 3] [--events 300000] [--duration 10] [--codec gzip]
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

from common import ROOT, collector, free_port, peak_rss_mib, wait_port, wrk

TOOLS = Path(os.environ.get("WEIR_TOOLS_DIR", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weir-tools"))
TANSU = Path(os.environ.get("WEIR_TANSU", TOOLS / "tansu-0.6.0/bin/tansu"))
PYTHON = Path(os.environ.get("WEIR_PYTHON", TOOLS / "python-kafka/bin/python"))


def flow(bootstrap, topic, codec, path, listen=None):
    path.write_text(f"""
[sources.http]
type = "http"
[sources.http.config]
ack = "delivered"
[sources.http.config.settings]
maxBatchSize = 100
{f'listen = "{listen}"' if listen else ''}

[destinations.kafka]
type = "kafka"
[destinations.kafka.config.settings.kafka]
brokers = ["{bootstrap}"]
topic = "{topic}"
compression = "{codec}"
""")
    return path


def create_topics(bootstrap, *topics):
    script = ("import sys\nfrom confluent_kafka.admin import AdminClient, NewTopic\n"
              "admin = AdminClient({'bootstrap.servers': sys.argv[1]})\n"
              "for f in admin.create_topics([NewTopic(t, 1, 1) for t in sys.argv[2:]]).values(): f.result(10)\n")
    subprocess.run([str(PYTHON), "-c", script, bootstrap, *topics], check=True)


def http(bootstrap, topic, codec, workdir, body, duration, connections):
    listen_port = free_port()
    flow_path = flow(bootstrap, topic, codec, workdir / "http.toml", listen=f"127.0.0.1:{listen_port}")
    process = subprocess.Popen([str(ROOT / "target/release/weir"), "serve", "--config", str(flow_path)],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_port(listen_port)
        url = f"http://127.0.0.1:{listen_port}/collect"
        wrk(url, body, 2, connections, workdir)
        batch = wrk(url, body, duration, connections, workdir)["rps"] * 100
        rss = peak_rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=40)
    return {"batch": batch, "rss": rss}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--codec", default="gzip")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (requests in flight)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    for tool in (TANSU, PYTHON):
        if not tool.exists():
            sys.exit(f"{tool} is missing: run scripts/test.sh, which installs it")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        broker = subprocess.Popen([str(TANSU), "broker", "--listener-url", f"tcp://{bootstrap}",
                                   "--advertised-listener-url", f"tcp://{bootstrap}", "--storage-engine",
                                   "memory://tansu/"], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            rounds = []
            template = subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--", "--print-template"],
                                      cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
            # The record weir makes of the benchmark event: the reference sends the same bytes.
            explain_flow = flow(bootstrap, "bench-weir", args.codec, tmp / "explain.toml")
            (tmp / "event.json").write_text(template)
            explained = subprocess.run([str(ROOT / "target/release/weir"), "explain", "--config", str(explain_flow),
                                        str(tmp / "event.json")], check=True, capture_output=True, text=True).stdout
            record = json.loads(explained)["wire"]["messages"][0]
            (tmp / "record.json").write_text(json.dumps(record))
            body = tmp / "batch.json"
            body.write_text("[" + ",".join([template] * 100) + "]")
            for number in range(args.rounds):
                topics = [f"bench-ref-{number}", f"bench-weir-{number}", f"bench-http-{number}"]
                create_topics(bootstrap, *topics)
                reference = json.loads(subprocess.run(
                    [str(PYTHON), str(ROOT / "bench/kafka-reference/producer.py"), bootstrap, topics[0],
                     str(tmp / "record.json"), str(args.events), args.codec],
                    check=True, capture_output=True, text=True).stdout)
                from_collector = collector(flow(bootstrap, topics[1], args.codec, tmp / "collector.toml"), args.events, 64)
                over_http = http(bootstrap, topics[2], args.codec, tmp, body, args.duration, args.connections)
                rounds.append({"reference": reference["messages_per_second"], "reference_rss": reference["peak_rss_mib"],
                               "collector": from_collector["events_per_second"],
                               "collector_rss": from_collector["peak_rss_mib"],
                               "http_batch": over_http["batch"], "http_rss": over_http["rss"]})
                print(f"round {number + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
        finally:
            broker.terminate()
            broker.wait(timeout=20)

    median = lambda key: statistics.median(r[key] for r in rounds)
    reference = median("reference")
    print(f"\n{args.rounds} rounds, medians; record value {len(record['value'])} B, {args.codec}, acks=all, idempotent, "
          f"linger 5 ms, into tansu memory://; {os.cpu_count()} cores shared by everything\n")
    print("| producer | events/s | ÷ confluent-kafka | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    print(f"| confluent-kafka (librdkafka), same records (reference) | {reference:,.0f} | 1.00 | {median('reference_rss'):.0f} |")
    for label, key, rss in [("weir from the collector (in-process)", "collector", "collector_rss"),
                            (f"weir over HTTP, 100-event batches, ack delivered, {args.connections} connections", "http_batch", "http_rss")]:
        print(f"| {label} | {median(key):,.0f} | {median(key) / reference:.2f} | {median(rss):.0f} |")


if __name__ == "__main__":
    main()
