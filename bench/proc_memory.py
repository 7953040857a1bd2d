"""Peak memory of a process and all its descendants, by polling /proc (Linux only).

``VmHWM`` is the kernel's record of a process's peak resident set size so far, so polling misses
only what a process grows in its last interval before it exits (and a process that lives less
than one interval altogether).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

POLL_S = 0.1


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read(f"/proc/{name}/stat")
            if stat and ") " in stat:
                out[int(name)] = int(stat.rsplit(") ", 1)[1].split()[1])
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class TreeMonitor(threading.Thread):
    """Polls the peak RSS (``VmHWM``) of a process and all its descendants until stopped."""

    def __init__(self, root: int, interval_s: float = POLL_S,
                 role: Callable[[int, int, str], str] = lambda pid, root, cmd: "root" if pid == root else "child"):
        super().__init__(daemon=True, name="tree-monitor")
        self.root, self.interval_s, self.role = root, interval_s, role
        self.seen: dict[int, dict] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            self._stop_event.wait(self.interval_s)

    def poll(self) -> None:
        for pid in _descendants(self.root):
            status = _read(f"/proc/{pid}/status") or ""
            match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
            if not match:
                continue  # a zombie or gone
            cmd = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
            entry = self.seen.setdefault(pid, {"pid": pid, "hwm_kib": 0, "cmd": cmd})
            entry["hwm_kib"] = max(entry["hwm_kib"], int(match.group(1)))
            entry["cmd"] = cmd or entry["cmd"]
            entry["role"] = self.role(pid, self.root, entry["cmd"])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def by_role(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for entry in self.seen.values():
            role = out.setdefault(entry["role"], {"processes": 0, "peak_rss_mib_max": 0.0, "peak_rss_mib": []})
            mib = round(entry["hwm_kib"] / 1024, 1)
            role["processes"] += 1
            role["peak_rss_mib"].append(mib)
            role["peak_rss_mib_max"] = max(role["peak_rss_mib_max"], mib)
        return out
