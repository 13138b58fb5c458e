"""One health sweep over many endpoints: do the checks overlap, and are the verdicts right?

Starts its own upstreams in a separate process: three loopback HTTP servers, one
answering 200, one answering 500 and one that never answers within the check
timeout. N endpoints (default 5 000) are spread over them: a tenth hang, a
tenth answer 500, the rest are healthy. The sweep is the one the beat task
runs (`workloads.health.check_many` with the configured timeout and
concurrency); one check after another would take about N x timeout.

    python bench/health.py [--endpoints 5000] [--timeout 2]

Last line: `health ratio: <sweep time / (N x timeout)> (target < 0.002)`.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UPSTREAMS = """
import asyncio, sys

async def main(hang_seconds):
    async def answer(status, reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(f"HTTP/1.1 {status}\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n".encode())
        await writer.drain()
        writer.close()

    async def hang(reader, writer):
        await asyncio.sleep(hang_seconds)
        writer.close()

    servers = [
        await asyncio.start_server(lambda r, w: answer("200 OK", r, w), "127.0.0.1", 0, backlog=4096),
        await asyncio.start_server(lambda r, w: answer("500 Server Error", r, w), "127.0.0.1", 0, backlog=4096),
        await asyncio.start_server(hang, "127.0.0.1", 0, backlog=4096),
    ]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(float(sys.argv[1])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-check timeout in seconds")
    parser.add_argument("--concurrency", type=int, default=None, help="default: HEALTH_CHECK_CONCURRENCY")
    args = parser.parse_args()
    if args.endpoints < 10 or args.timeout <= 0:
        parser.error("--endpoints must be >= 10 and --timeout > 0")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arbitrage.settings")
    os.environ.setdefault("ARBITRAGE_VAR_DIR", str(ROOT / "var" / "bench-health"))
    import django

    django.setup()
    from django.conf import settings

    from workloads.health import check_many

    concurrency = args.concurrency or settings.HEALTH_CHECK_CONCURRENCY
    upstreams = subprocess.Popen(
        [sys.executable, "-c", UPSTREAMS, str(args.timeout * 3)], stdout=subprocess.PIPE, text=True
    )
    try:
        ok_port, error_port, hang_port = (int(port) for port in upstreams.stdout.readline().split())
        endpoints, expected = [], []
        for index in range(args.endpoints):
            if index % 10 == 0:
                endpoints.append(f"127.0.0.1:{hang_port}")
                expected.append(False)
            elif index % 10 == 1:
                endpoints.append(f"127.0.0.1:{error_port}")
                expected.append(False)
            else:
                endpoints.append(f"127.0.0.1:{ok_port}")
                expected.append(True)

        started = time.monotonic()
        results = check_many(endpoints, timeout=args.timeout, concurrency=concurrency)
        elapsed = time.monotonic() - started
    finally:
        upstreams.kill()
        upstreams.wait()

    wrong = sum(result.ok != want for result, want in zip(results, expected, strict=True))
    timeouts = sum(result.error == "timed out" for result in results)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = elapsed / (args.endpoints * args.timeout)
    print(f"endpoints: {args.endpoints} (a tenth hang, a tenth answer 500), timeout {args.timeout} s, "
          f"concurrency {concurrency}")  # fmt: skip
    print(f"sweep: {elapsed:.2f} s; one after another: about {args.endpoints * args.timeout:.0f} s")
    print(f"verdicts: {len(results) - wrong} right, {wrong} wrong; {timeouts} timed out")
    print(f"peak memory: {peak_mib:.0f} MiB")
    if wrong:
        raise SystemExit(f"{wrong} wrong verdicts")
    print(f"health ratio: {ratio:.5f} (target < 0.002)")


if __name__ == "__main__":
    main()
