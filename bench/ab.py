"""Interleaved A/B of weir over HTTP into Redis: two weir binaries against one redis-server,
alternating which goes first each round, with bench/redis.py's flow, bodies and wrk runs.

    python3 bench/ab.py BEFORE_BINARY AFTER_BINARY [--rounds 8] [--duration 6]

Build each binary with `cargo build --release` at its commit and copy `target/release/weir`
away. Needs what bench/redis.py needs (redis-server, wrk) and this checkout's collector bench
for the event template.
"""
import argparse, json, statistics, subprocess, sys, tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import redis as bench  # bench/redis.py
from common import free_port, wait_port

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("before", type=Path)
parser.add_argument("after", type=Path)
parser.add_argument("--rounds", type=int, default=8)
parser.add_argument("--duration", type=int, default=6)
args = parser.parse_args()
binaries = {"before": args.before.resolve(), "after": args.after.resolve()}
ROUNDS, DURATION = args.rounds, args.duration
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        template = subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--", "--print-template"],
                                  cwd=HERE.parent, check=True, capture_output=True, text=True).stdout.strip()
        bodies = {"single": tmp / "single.json", "batch": tmp / "batch.json"}
        bodies["single"].write_text(template)
        bodies["batch"].write_text("[" + ",".join([template] * 100) + "]")
        results = {name: [] for name in binaries}
        for number in range(ROUNDS):
            order = list(binaries) if number % 2 == 0 else list(reversed(list(binaries)))
            for name in order:
                root = tmp / name
                (root / "target/release").mkdir(parents=True, exist_ok=True)
                link = root / "target/release/weir"
                if not link.exists():
                    link.symlink_to(binaries[name])
                bench.ROOT = root
                run = bench.http(port, tmp, bodies, DURATION)
                results[name].append(run)
                print(f"round {number + 1} {name}: {json.dumps(run)}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=20)
for name, runs in results.items():
    batches = ", ".join("%.0fk" % (r["batch"] / 1000) for r in runs)
    print("%s: batch events/s median %.0f (rounds %s); single req/s median %.0f" % (
        name, statistics.median(r["batch"] for r in runs), batches, statistics.median(r["single"] for r in runs)))
