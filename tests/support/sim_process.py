"""The simulator as a separate process on 127.0.0.1, for tests that need an endpoint benchflow does not own."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time


class SimServer:
    """A simulator started by the test (an endpoint benchflow does not own)."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchflow.sim", "--port", "0", "--model", "sim-model", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        self.url = None
        while self.url is None:
            line = self.proc.stdout.readline()
            m = re.search(r"running on (http://[\d.]+:\d+)", line, re.I)
            if m:
                self.url = m.group(1)
            assert time.monotonic() < deadline and (line or self.proc.poll() is None), "simulator did not start"
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained

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
