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
