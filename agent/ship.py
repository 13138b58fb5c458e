"""python3 ship.py -- COMMAND...: run COMMAND, copy its output to ours and ship it to the workload's log.

Stdlib only (the boot script embeds it). Batches (every 2 s or 32 KiB) go by byte offset to
POST $ARBITRAGE_API_URL/api/v1/agent/logs with $WORKLOAD_AGENT_TOKEN. An unreachable API never
stops the command: unsent bytes wait (at most CAP, the oldest dropped), a few tries at the end.
SIGTERM and SIGINT go to the command; we exit with its status.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from urllib import error, request

BATCH, EVERY, CAP, FINAL_TRIES = 32768, 2.0, 8 << 20, 4


class Shipper:
    def __init__(self, env):
        url, self.token = env.get("ARBITRAGE_API_URL", ""), env.get("WORKLOAD_AGENT_TOKEN", "")
        self.url = url.rstrip("/") + "/api/v1/agent/logs" if url and self.token else ""
        self.buf, self.start, self.seen, self.lost = bytearray(), 0, 0, False  # start: offset of buf[0]
        self.cond, self.done = threading.Condition(), False

    def add(self, data):
        with self.cond:
            self.buf += data
            if len(self.buf) > CAP:  # the API has been away too long: drop the oldest
                self.skip(self.start + len(self.buf) - CAP, lost=True)
            if len(self.buf) >= BATCH:
                self.cond.notify()

    def skip(self, to, lost=False):
        cut = min(max(to - self.start, 0), len(self.buf))
        del self.buf[:cut]
        self.start += cut
        self.lost = self.lost or lost

    def post(self, body):
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + self.token}
        try:
            with request.urlopen(request.Request(self.url, json.dumps(body).encode(), headers), timeout=10) as a:
                return a.status, json.load(a)
        except error.HTTPError as a:
            try:
                return a.code, json.load(a).get("error", {})
            except ValueError:
                return a.code, {}
        except (OSError, ValueError):
            return 0, {}

    def send(self, final):  # False: the API did not answer usefully, try again later
        while self.url:
            with self.cond:
                data, start, last = bytes(self.buf[:BATCH]), self.start, final and len(self.buf) <= BATCH
                if not last and (not data or start + len(self.buf) <= self.seen):
                    return True  # nothing new since it kept an unfinished line
            body = {"offset": start, "data_b64": base64.b64encode(data).decode(), "final": last}
            if self.lost:
                body["resume"] = True
            status, answer = self.post(body)
            expected = answer.get("offset", answer.get("expected_offset"))
            if status in (202, 409) and isinstance(expected, int):
                with self.cond:
                    self.lost = expected < self.start
                    self.skip(expected)  # resend from there, or skip what it has
                if status == 202:
                    self.seen = start + len(data)
                    if last:
                        return True
            elif status in (400, 413):
                with self.cond:
                    self.skip(start + len(data), lost=True)
            elif status in (401, 403) or answer.get("code") == "log_finished":
                self.url = ""  # the token may not write, or the log is closed: no use trying
            else:
                return False
        return True

    def run(self):
        wait = EVERY
        while True:
            with self.cond:
                if not self.done:
                    self.cond.wait(wait)
                done = self.done
            if done:
                break
            wait = EVERY if self.send(False) else min(wait * 2, 60)
        for tries in range(FINAL_TRIES):
            if self.send(True):
                return
            time.sleep(0.5 * 2**tries)


def main(argv, env):
    command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
    if not command:
        return 2
    shipper = Shipper(env)
    thread = threading.Thread(target=shipper.run, daemon=True)
    thread.start()
    out = sys.stdout.buffer
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        status, child = 127, None
        message = f"ship.py: cannot run {command[0]}: {e}\n".encode()
        out.write(message)
        shipper.add(message)
    if child:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda n, _: child.send_signal(n))
        while data := os.read(child.stdout.fileno(), 65536):
            out.write(data)
            out.flush()
            shipper.add(data)
        status = child.wait()
        status = 128 - status if status < 0 else status
    out.flush()
    with shipper.cond:
        shipper.done = True
        shipper.cond.notify()
    thread.join(120)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv, os.environ))
