"""The bench's upstream: an asyncio server that is never the bottleneck (uvicorn, httptools, uvloop).

    .venv/bin/python bench/upstream.py PORT INSTANCE_ID [WORK_SECONDS]

Answers like the sample agent: any GET with a small JSON body naming the instance
and the path, after WORK_SECONDS (default 0) of work that takes no CPU (an app
waiting on its database or its GPU: requests are served concurrently, never queued);
``/stream?chunks=N&size=B&interval=S`` a chunked body of N chunks of B bytes, one
every S seconds; a websocket at any path echoes every message.
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import parse_qs

import uvicorn


def make_app(instance_id: str, work_seconds: float = 0.0):
    async def app(scope, receive, send) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            query = {name: values[0] for name, values in parse_qs(scope["query_string"].decode()).items()}
            chunks, size, interval = (
                int(query.get("chunks", 10)),
                int(query.get("size", 1024)),
                float(query.get("interval", 0.1)),
            )
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for n in range(chunks):
                if n:
                    await asyncio.sleep(interval)
                await send({"type": "http.response.body", "body": b"x" * size, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if work_seconds and scope["path"] != "/health":
            await asyncio.sleep(work_seconds)
        body = json.dumps({"instance_id": instance_id, "path": scope["path"]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    port, instance_id = int(sys.argv[1]), sys.argv[2]
    work_seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    uvicorn.run(
        make_app(instance_id, work_seconds),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="off",
        backlog=1024,
    )
