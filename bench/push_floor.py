"""The floor of the push channel's sending side: the CPU that firebase-admin's
`messaging.send_each` costs the sending process per message, through the
project's push channel (delivery.channels.push), against a server that does
nothing but answer FCM's success body (a separate process: plain http.server
threads, no Django, no database, no outbox). Prints one JSON object.

    .venv/bin/python bench/push_floor.py [--batches 10] [--batch 500]

FCM HTTP v1 has no batch endpoint: send_each makes one HTTPS request per
message (on a thread pool). With no rendering, no database and a server that
costs nothing, 2 cores can send at most 2 / (client CPU per message) a second:
`max_per_s_on_2_cores` is that ceiling for this machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.endswith("/token"):
            body = json.dumps({"access_token": "floor", "expires_in": 3600, "token_type": "Bearer"}).encode()
        else:
            body = b'{"name": "projects/floor/messages/1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--port", type=int, default=8396)
    args = parser.parse_args()

    server = multiprocessing.Process(target=_serve, args=(args.port,), daemon=True)
    server.start()
    time.sleep(0.5)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-push-floor-" + "x" * 40)
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from delivery.channels import channel_get
    from delivery.channels.base import Outgoing
    from localproviders.channel_settings import local_service_account

    base = f"http://127.0.0.1:{args.port}"
    account = local_service_account(base_url=base)
    account["token_uri"] = f"{base}/token"
    channel = channel_get("push")
    settings = channel.settings_validate({"service_account": account, "fcm_url": base})
    token = "f" * 20 + ":" + "A" * 140  # the shape of an FCM registration token

    def batch(n: int, offset: int) -> list[Outgoing]:
        return [
            Outgoing(
                message_id=offset + i,
                idempotency_key=f"floor:{offset + i}",
                to=token,
                content={"title": "Picked for you", "body": "Three products we think you will like", "data": {}},
            )
            for i in range(n)
        ]

    channel.send_batch(settings, batch(args.batch, 0))  # warm: the app, the token, the connections
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sent = 0
    for b in range(args.batches):
        results = channel.send_batch(settings, batch(args.batch, (b + 1) * args.batch))
        sent += sum(1 for r in results if r.error is None)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server.terminate()
    total = args.batches * args.batch
    cpu_us = cpu / total * 1e6
    print(
        json.dumps(
            {
                "messages": total,
                "sent": sent,
                "client_cpu_us_per_message": round(cpu_us, 1),
                "client_wall_us_per_message": round(wall / total * 1e6, 1),
                "max_per_s_on_2_cores": round(2 / (cpu_us / 1e6)),
                "load": list(os.getloadavg()),
            }
        )
    )


if __name__ == "__main__":
    main()
