#!/usr/bin/env python3
"""The reference for bench/kafka.py: a plain librdkafka producer (Python's confluent-kafka)
sending N copies of one record, with the producer settings weir uses (acks=all, idempotent,
the same codec, linger and partitioner). Prints one JSON line: msgs/s from the first produce
to the last delivery report, and the process's peak RSS.

Usage: producer.py BOOTSTRAP TOPIC RECORD_JSON N CODEC
"""

import json
import resource
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, record_file, count, codec = sys.argv[1:6]
count = int(count)
record = json.load(open(record_file))
key, value = record["key"].encode(), record["value"].encode()
headers = list(record["headers"].items())

producer = Producer({
    "bootstrap.servers": bootstrap,
    "acks": "all",
    "enable.idempotence": True,
    "compression.codec": codec,
    "linger.ms": 5,
    "partitioner": "murmur2_random",
})
delivered = 0
failed = 0


def report(error, _message):
    global delivered, failed
    if error is None:
        delivered += 1
    else:
        failed += 1


started = time.perf_counter()
for _ in range(count):
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
            break
        except BufferError:
            producer.poll(0.005)
    producer.poll(0)
producer.flush(120)
elapsed = time.perf_counter() - started
if delivered != count:
    sys.exit(f"{delivered} of {count} delivered, {failed} failed")
print(json.dumps({
    "messages_per_second": count / elapsed,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
