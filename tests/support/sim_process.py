"""The simulator as a separate process on 127.0.0.1, for tests that need an endpoint benchflow does not own."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

from tests.support.helpers import wait_for

#: Generous: it only bounds how long a simulator that never starts takes to fail the test.
STARTUP_TIMEOUT_S = 60.0


class SimServer:
    """A simulator started by the test (an endpoint benchflow does not own)."""

    def __init__(self, *args: str, startup_timeout_s: float = STARTUP_TIMEOUT_S):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchflow.sim", "--port", "0", "--model", "sim-model", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url: str | None = None
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()  # keeps the pipe drained
        try:
            wait_for(lambda: self.url, startup_timeout_s, what="the simulator's start-up line", proc=self.proc,
                     detail=lambda: "".join(self.lines)[-3000:])
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"running on (http://[\d.]+:\d+)", line, re.I)
            if m and self.url is None:
                self.url = m.group(1)

    def requests_seen(self) -> int:
        import urllib.request

        text = urllib.request.urlopen(f"{self.url}/metrics", timeout=5).read().decode()
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("vllm:e2e_request_latency_seconds_count")))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
