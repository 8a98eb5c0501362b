"""CPU time of the machine's processes in three groups, read from /proc (Linux): the portal's
server (a gunicorn master and everything under it), PostgreSQL (every `postgres` process) and
the rest (the load generator, the benchmark itself, whatever else runs). What a step cost each
group, per event, says what bounds a figure: a step whose two cores are busy is CPU-bound, and
then the server's and PostgreSQL's shares are where time can be won.

    meter = CpuMeter(server_pid)
    before = meter.snapshot()
    ...  # the step
    meter.per_event(before, events)  # {"server": ms, "postgres": ms, "rest": ms, "busy_cores": n}

Each process counts its own user and system time and that of its children it has reaped
(`cutime`, `cstime`): a PostgreSQL backend that ended is in the postmaster's, a worker gunicorn
restarted in the master's. A process that started and ended between two snapshots under a
parent of another group (a `manage.py` run by the benchmark) is counted in that parent's group.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
GROUPS = ("server", "postgres", "rest")


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks with its reaped children)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is the state (stat's 3rd field): ppid is the 4th, utime..cstime the 14th-17th.
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
        out[int(entry.name)] = (int(fields[1]), name, ticks)
    return out


class CpuMeter:
    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def _group(self, pid: int, processes: dict) -> str:
        seen = set()
        while pid and pid not in seen:
            if pid == self.server_pid:
                return "server"
            seen.add(pid)
            pid = processes.get(pid, (0, "", 0))[0]
        return "rest"

    def snapshot(self) -> dict[str, float]:
        """CPU seconds of each group so far, and the time (`at`, time.monotonic())."""
        processes = _processes()
        seconds = dict.fromkeys(GROUPS, 0.0)
        for pid, (_, name, ticks) in processes.items():
            group = "postgres" if name == "postgres" else self._group(pid, processes)
            seconds[group] += ticks / TICKS_PER_SECOND
        return {**seconds, "at": time.monotonic()}

    def per_event(self, before: dict[str, float], events: int) -> dict[str, float]:
        """Each group's CPU since `before` in ms per event, and how many cores were busy on
        average (all groups together)."""
        after = self.snapshot()
        used = {g: max(0.0, after[g] - before[g]) for g in GROUPS}
        out = {g: round(used[g] * 1000 / max(events, 1), 2) for g in GROUPS}
        out["busy_cores"] = round(sum(used.values()) / max(after["at"] - before["at"], 1e-9), 2)
        return out

    def connections(self, port: int) -> list[int]:
        """How many established TCP connections to `port` each of the server's processes (the
        master's children: its workers) holds now, most first (from /proc/net/tcp and each
        process's open sockets). A worker's connections stay with it for as long as the
        client keeps them open: a load generator that opens all of its connections at once
        finds them split by which worker's event loop woke first (docs/performance.md, run 14),
        and each worker runs Python on one core at a time."""
        established = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    established.add(fields[9])  # the socket's inode
        processes = _processes()
        counts = []
        for pid in processes:
            if pid == self.server_pid or self._group(pid, processes) != "server":
                continue
            try:
                links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            except OSError:  # ended meanwhile
                continue
            counts.append(sum(1 for link in links if link.startswith("socket:[")
                              and link[8:-1] in established))  # fmt: skip
        return sorted(counts, reverse=True)
