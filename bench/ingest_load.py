"""The load process of bench/ingest.py: posts events over keep-alive HTTP/1.1
connections as fast as the server answers, for a fixed time.

A separate process from the benchmark's driver so that generating load does
not share an interpreter with measuring. Raw asyncio streams rather than an
HTTP client library: the generator must cost far less CPU per request than
the server it measures (both share the same two cores).

Every request carries new message ids (a counter is written into a template
body), so every accepted event must be stored. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time
from typing import Any

PLACEHOLDER = b"RQRQRQRQRQ"  # replaced by the request number, 10 digits


def _message(rnd: random.Random, users: int, j: int, user_digits: int = 0) -> dict[str, Any]:
    """A track call shaped like the mobile SDKs send it (context included); user ids
    zero-padded to `user_digits` (generate_demo_data's users are user-0000042)."""
    user = f"{rnd.randrange(users):0{user_digits}d}"
    roll = rnd.random()
    if roll < 0.75:
        event, properties = (
            "Product Viewed",
            {"product_id": f"p{rnd.randrange(5000)}", "name": "Trail shoe", "price": 59.9, "currency": "EUR"},
        )
    elif roll < 0.92:
        event, properties = ("Product Added", {"product_id": f"p{rnd.randrange(5000)}", "quantity": 1, "cart_id": "c1"})
    else:
        event, properties = (
            "Order Completed",
            {
                "order_id": f"o{rnd.randrange(10**9)}",
                "total": 119.8,
                "products": [{"product_id": f"p{rnd.randrange(5000)}", "quantity": 1} for _ in range(2)],
            },
        )
    return {
        "type": "track",
        "event": event,
        "userId": f"user-{user}",
        "anonymousId": f"anon-{user}",
        "messageId": f"{PLACEHOLDER.decode()}-{j:04d}",
        "properties": properties,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "context": {
            "library": {"name": "analytics-kotlin", "version": "1.16.0"},
            "app": {"name": "Shop", "version": "4.2.0", "build": "420"},
            "device": {"id": f"device-{user}", "manufacturer": "Google", "model": "Pixel 8", "type": "android"},
            "os": {"name": "Android", "version": "14"},
            "locale": "en-GB",
            "timezone": "Europe/London",
            "network": {"wifi": True},
        },
    }


def build_templates(
    *, mode: str, batch_size: int, users: int, count: int, seed: int, user_digits: int = 0
) -> list[bytes]:
    rnd = random.Random(seed)
    templates = []
    for _ in range(count):
        if mode == "batch":
            # sentAt equal to the messages' timestamp: no skew correction shift.
            body: Any = {
                "batch": [_message(rnd, users, j, user_digits) for j in range(batch_size)],
                "sentAt": "2026-01-01T00:00:00.000Z",
            }
        else:
            body = _message(rnd, users, 0, user_digits)
        templates.append(json.dumps(body, separators=(",", ":")).encode())
    return templates


async def _connection(
    *, host: str, port: int, head: bytes, templates: list[bytes], counter: list[int], prefix: int,
    deadline: float, latencies: list[float], errors: list[int], interval: float, gaps: random.Random | None,
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    next_send = time.perf_counter()
    try:
        while time.perf_counter() < deadline:
            if interval:
                # Open loop: this connection's share of --rate, on its schedule:
                # independent clients (Poisson arrivals: exponential gaps of
                # mean `interval`), or every connection at once (lockstep).
                next_send += gaps.expovariate(1 / interval) if gaps is not None else interval
                delay = next_send - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            n = counter[0]
            counter[0] += 1
            body = templates[n % len(templates)].replace(PLACEHOLDER, b"%010d" % (prefix + n))
            # Open loop: latency counts from the scheduled time, so a request
            # sent late because the previous answer was late is counted late
            # too (no coordinated omission).
            start = min(next_send, time.perf_counter()) if interval else time.perf_counter()
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            header = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in header.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if header[9:12] != b"200":
                errors.append(int(header[9:12]))
            if b"connection: close" in header.lower():
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    templates = build_templates(
        mode=args.mode,
        batch_size=args.batch_size,
        users=args.users,
        count=args.templates,
        seed=args.seed,
        user_digits=args.user_digits,
    )
    auth = base64.b64encode(f"{args.write_key}:".encode()).decode()
    path = "/v1/batch" if args.mode == "batch" else "/v1/track"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {args.host}\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: application/json\r\nUser-Agent: bench-ingest-load\r\n"
    ).encode()
    latencies: list[float] = []
    errors: list[int] = []
    counter = [0]
    start = time.perf_counter()
    deadline = start + args.duration
    await asyncio.gather(
        *(
            _connection(
                host=args.host,
                port=args.port,
                head=head,
                templates=templates,
                counter=counter,
                prefix=args.prefix,
                deadline=deadline,
                latencies=latencies,
                errors=errors,
                interval=args.connections / args.rate if args.rate else 0.0,
                gaps=random.Random(args.seed * 1000 + n) if args.arrivals == "poisson" else None,
            )
            for n in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else 0.0

    ok = len(latencies) - len(errors)
    per_request = args.batch_size if args.mode == "batch" else 1
    return {
        "mode": args.mode,
        "requests": len(latencies),
        "ok": ok,
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "events_accepted": ok * per_request,
        "events_per_s_accepted": round(ok * per_request / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--mode", choices=["batch", "single"], required=True)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second in all (0: as fast as answered)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument(
        "--arrivals",
        choices=["poisson", "lockstep"],
        default="lockstep",
        help="with --rate: each connection sends at exponential gaps (independent clients, as SDKs in the field), "
        "or all connections at once every connections/rate seconds (bursts of --connections requests)",
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--user-digits", type=int, default=0, help="zero-pad user numbers to this many digits")
    parser.add_argument("--templates", type=int, default=200)
    parser.add_argument("--prefix", type=int, default=0, help="first request number (unique message ids per run)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
