"""Group commit: concurrent calls of one process that lock the same account row are recorded
together in one transaction, each answered with its own outcome. Three lanes use it:

- single usage events (`usage_record`) of one attribution (organization, API key, team,
  member), recorded by the batch path (`usage_record_many`);
- holds (`authorization_create`, the gateway's first step) of one attribution
  (`authorization_create_many`);
- captures (`authorization_capture`, the gateway's last step) of holds on one account
  (`authorization_capture_many`).

Why: every write of an attribution locks the same account row, so its writes are made one
transaction after the other, however many threads send them; under concurrency each hand-off
of the lock (a commit, the next backend woken, its thread woken for the GIL) costs more than
the statements. A group takes the row's lock once for all its calls.

How (leader and followers, as PostgreSQL's own WAL group commit): the first call of a lane
opens a group and leads it; calls that arrive while it waits for its turn (the lane's previous
transaction in this process) join it. When its turn comes, the leader
closes the group (later calls open the next) and records the group's calls in order with its
lane's `record_many`, whose outcome for each call is that of the call alone, made in that
order: the strictness (balance, budgets, key limits) and idempotency of one by one. Each
follower waits for its outcome; an error of the whole transaction is raised in every caller.
Alone, a call leads a group of one at once: no waiting is added.

Not grouped: a call inside a transaction of its caller (its write must be part of it), and
every call when `USAGE_GROUP_COMMIT` is off. At most USAGE_GROUP_MAX calls a group.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection


@dataclass
class _Group:
    items: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    outcomes: list | None = None
    error: BaseException | None = None


class _Lane:
    """The calls of one attribution in this process."""

    def __init__(self):
        self.lock = threading.Lock()  # guards `open`
        self.turn = threading.Lock()  # held by the leader whose transaction is in flight
        self.open: _Group | None = None  # the group new calls join


_lanes: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # idle lanes go
_lanes_lock = threading.Lock()


def lane_of(kind: str, attribution) -> tuple:
    """The lane of `kind` ("usage", "hold") for `attribution`'s calls (captures: the lane
    ("capture", the account's id))."""
    return (
        kind,
        attribution.organization.pk,
        attribution.api_key.pk if attribution.api_key else None,
        attribution.team.pk if attribution.team else None,
        attribution.member.pk if attribution.member else None,
    )


def _lane(key: tuple) -> _Lane:
    with _lanes_lock:
        lane = _lanes.get(key)
        if lane is None:
            lane = _lanes[key] = _Lane()
        return lane


def connection_release() -> None:
    """Give this thread's pooled connection back before it waits (for a group's leader, for a
    gateway's upstream), so that waiting threads do not hold the pool's connections: followers
    holding the last ones while their leader waited for one stalled the process until the
    pool's timeout (seen under load: a request's key lookup takes a connection first), and a
    request waiting for its upstream would hold one for as long as the model writes. Without
    a pool (a persistent connection per thread) nothing is done."""
    if connection.connection is not None and getattr(connection, "pool", None) is not None:
        connection.close()


def record_grouped(key: tuple, item, record_many: Callable[[list], list]) -> object:
    """The outcome of `item` (the result of its call, or the ApplicationError that refused it),
    as `record_many([items...])` gives it for `item` alone or with the concurrent calls of the
    lane `key` (`lane_of`; see the module docstring). Errors of the whole transaction (a
    database error) are raised."""
    if not settings.USAGE_GROUP_COMMIT or connection.in_atomic_block:
        return record_many([item])[0]
    lane = _lane(key)
    with lane.lock:
        group = lane.open
        leader = group is None or len(group.items) >= settings.USAGE_GROUP_MAX
        if leader:
            group = lane.open = _Group()
        index = len(group.items)
        group.items.append(item)
    if not leader:
        connection_release()
        group.done.wait()
        if group.error is not None:
            raise group.error
        return group.outcomes[index]
    with lane.turn:
        with lane.lock:
            if lane.open is group:
                lane.open = None  # closed: later calls open the next group
        try:
            group.outcomes = record_many(group.items)
        except BaseException as exc:
            group.error = exc
            raise
        finally:
            group.done.set()
    return group.outcomes[index]
