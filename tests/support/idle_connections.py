"""Opens COUNT idle TCP connections to HOST:PORT (PER_TICK of them every 25 ms), sends nothing
on them, and prints one JSON line saying how the server ended each: "refused" (it answered 503
at once), "closed" (after how many seconds), "failed" (why).

A helper process of tests/abuse.rs: one process may hold only as many sockets as its open-files
limit allows, so a test that needs more than that runs several of these."""

import asyncio
import json
import resource
import sys
import time


async def one(host, port):
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as error:
        return "failed", f"connect: {error}"
    try:
        data = await asyncio.wait_for(reader.read(512), 40)
    except asyncio.TimeoutError:
        return "failed", "still open after 40 s"
    except OSError:
        data = b""
    finally:
        writer.close()
    if not data:
        return "closed", time.monotonic() - opened
    if data.startswith(b"HTTP/1.1 503"):
        return "refused", None
    return "failed", f"answered {data[:80]!r}"


async def main(host, port, count, per_tick):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tasks = []
    for n in range(count):
        if n % per_tick == 0:
            await asyncio.sleep(0.025)
        tasks.append(asyncio.create_task(one(host, port)))
    outcomes = await asyncio.gather(*tasks)
    print(json.dumps({
        "refused": sum(1 for kind, _ in outcomes if kind == "refused"),
        "closed": [after for kind, after in outcomes if kind == "closed"],
        "failed": [why for kind, why in outcomes if kind == "failed"],
    }), flush=True)


if __name__ == "__main__":
    host, port = sys.argv[1].rsplit(":", 1)
    asyncio.run(main(host, int(port), int(sys.argv[2]), int(sys.argv[3])))
