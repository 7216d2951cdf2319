#!/usr/bin/env python3
"""What JavaScript in a mapping costs: the collector benchmark (`cargo bench --bench collector`,
in-process: enrichment, mapping, render, delivery, acknowledgement) into `blackhole`, once with
a rule that runs one `condition` and one `fn` on every event (one-parameter arrows, as most
walkerOS mappings write them), once with the same functions taking their context too, and once
with the same rule written declaratively (no condition, the value read by path). Ratios to the
declarative run of the same round, medians of the rounds.

    python3 bench/code.py [--rounds 3] [--events 200000]

Prints a Markdown table for BENCHMARKS.md. Both flows run the same number of events; the
collector benchmark reports its own peak RSS.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import ROOT

FLOWS = {
    "declarative": """
[destinations.b]
type = "blackhole"
[destinations.b.config.mapping.page.view]
name = "page_view"
[destinations.b.config.mapping.page.view.data.map]
title = "data.title"
url = "data.url"
""",
    "code": """
[destinations.b]
type = "blackhole"
[[destinations.b.config.mapping.page.view]]
condition = "$code:(event) => event.consent.functional === true"
name = "page_view"
[destinations.b.config.mapping.page.view.data.map]
title = { fn = "$code:(event) => event.data.title.toLowerCase()" }
url = "data.url"
""",
    # The same with functions that take their context, which every call then builds.
    "code, with context": """
[destinations.b]
type = "blackhole"
[[destinations.b.config.mapping.page.view]]
condition = "$code:(event, context) => event.consent.functional === true"
name = "page_view"
[destinations.b.config.mapping.page.view.data.map]
title = { fn = "$code:(event, context) => event.data.title.toLowerCase()" }
url = "data.url"
""",
}


def run(flow_text, events):
    with tempfile.TemporaryDirectory() as work:
        flow = Path(work) / "flow.toml"
        flow.write_text(flow_text)
        out = subprocess.run(
            ["cargo", "bench", "--quiet", "--bench", "collector", "--", "--flow", str(flow), "--events", str(events)],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "collector", "--no-run"], cwd=ROOT, check=True,
                   capture_output=True)
    rows = {name: [] for name in FLOWS}
    ratios = {name: [] for name in FLOWS}
    for round_ in range(args.rounds):
        results = {name: run(text, args.events) for name, text in FLOWS.items()}
        base = results["declarative"]["events_per_second"]
        for name, result in results.items():
            rows[name].append(result)
            ratios[name].append(result["events_per_second"] / base)
        print(f"round {round_ + 1}: " + ", ".join(
            f"{name} {result['events_per_second']:,.0f}/s ({result['events_per_second'] / base:.2f})"
            for name, result in results.items()), flush=True)
    print("\n| collector → blackhole | events/s (median) | peak RSS MiB | ÷ declarative |")
    print("|---|---|---|---|")
    for name in FLOWS:
        rate = statistics.median(r["events_per_second"] for r in rows[name])
        rss = statistics.median(r["peak_rss_mib"] for r in rows[name])
        ratio = "1.00" if name == "declarative" else f"**{statistics.median(ratios[name]):.2f}**"
        print(f"| {name} | {rate:,.0f} | {rss:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
