"""The demo's customer who keeps using the long job's endpoint through the gateway, in a thread."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from demo import DemoFailed
from demo.client import Answer, error_message, http


@dataclass(frozen=True)
class EndpointCall:
    at: float  # monotonic time the call was made
    took: float
    status: int  # 0: no answer
    body: dict[str, Any]
    error: str = ""

    @property
    def instance_id(self) -> str:
        return str(self.body.get("instance_id") or "")

    @property
    def progress(self) -> int:
        return int(self.body.get("progress") or 0)

    def line(self) -> str:
        if self.status != 200:
            return self.error
        text = answer_line(self.body)
        return text + (f"  [held {self.took:.1f} s by the gateway]" if self.took > 1 else "")


class EndpointPoller:
    """Calls a workload's endpoint through the gateway in a loop, in a thread: a customer who keeps using it."""

    def __init__(self, port: int, endpoint: str, *, every: float = 0.3) -> None:
        self.port = port
        self.endpoint = endpoint
        self.every = every
        self.calls: queue.Queue[EndpointCall] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="demo-endpoint-poller", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=0.1)  # a call held by the gateway ends on its own (daemon thread)

    def run(self) -> None:
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                answer = call_gateway(self.port, self.endpoint, timeout=60)
            except DemoFailed as failure:
                call = EndpointCall(began, time.monotonic() - began, 0, {}, str(failure))
            else:
                body = answer.body if isinstance(answer.body, dict) else {}
                error = error_message(answer)
                if retry := answer.headers.get("Retry-After"):
                    error += f" (Retry-After {retry})"
                call = EndpointCall(began, time.monotonic() - began, answer.status, body, error)
            self.calls.put(call)
            self.stopping.wait(self.every)

    def next_call(self) -> EndpointCall | None:
        try:
            return self.calls.get_nowait()
        except queue.Empty:
            return None

    def drain(self) -> list[EndpointCall]:
        calls = []
        while (call := self.next_call()) is not None:
            calls.append(call)
        return calls


def call_gateway(port: int, endpoint: str, *, timeout: float = 60) -> Answer:
    """GET / of a workload by its endpoint name, through the gateway on this machine."""
    try:
        return http("GET", f"http://127.0.0.1:{port}/", headers={"Host": f"{endpoint}:{port}"}, timeout=timeout)
    except OSError as error:
        raise DemoFailed(f"the gateway did not answer for {endpoint} ({error})") from None


def answer_line(body: dict[str, Any]) -> str:
    line = f"{body.get('provider') or '?'} {body.get('instance_id') or '?'}: progress {body.get('progress')}"
    if body.get("restored_progress") is not None:
        line += f" (restored {body['restored_progress']})"
    return line
