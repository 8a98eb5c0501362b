"""Group commit of single usage events (`usage_record`): concurrent calls of one process for the
same attribution (organization, API key, team, member) are recorded together, in one
transaction of the batch path (`usage_record_many`), each answered with its own outcome.

Why: every event of an attribution locks the same account row, so its events are recorded one
transaction after the other, however many threads send them; a transaction of n events holds
the lock hardly longer than one of a single event (the statements are the same), so under
concurrency the row's lock is taken once per group instead of once per event.

How (leader and followers, as PostgreSQL's own WAL group commit): the first call of an
attribution opens a group and leads it; calls that arrive while it waits for its turn (the
attribution's previous transaction in this process) join it. When its turn comes, the leader
closes the group (later calls open the next) and records the group's events in order with
`usage_record_many`, whose outcome for each event is that of `usage_record` called for each in
order: the strictness (balance, budgets, key limits) and idempotency of one by one. Each
follower waits for its outcome; an error of the whole transaction is raised in every caller.
Alone, a call leads a group of one at once: no waiting is added.

Not grouped: a call inside a transaction of its caller (its write must be part of it), and
every call when `USAGE_GROUP_COMMIT` is off. At most USAGE_GROUP_MAX events a group.
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
    events: list = field(default_factory=list)
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


def _lane(attribution) -> _Lane:
    key = (
        attribution.organization.pk,
        attribution.api_key.pk if attribution.api_key else None,
        attribution.team.pk if attribution.team else None,
        attribution.member.pk if attribution.member else None,
    )
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


def record_grouped(attribution, event, record_many: Callable) -> object:
    """The outcome (a UsageResult or the ApplicationError that refused it) of `event`, recorded
    by `record_many(attribution=..., events=[...])` alone or with the concurrent calls of the
    same attribution (see the module docstring). Errors of the whole transaction (a database
    error) are raised."""
    if not settings.USAGE_GROUP_COMMIT or connection.in_atomic_block:
        return record_many(attribution=attribution, events=[event])[0]
    lane = _lane(attribution)
    with lane.lock:
        group = lane.open
        leader = group is None or len(group.events) >= settings.USAGE_GROUP_MAX
        if leader:
            group = lane.open = _Group()
        index = len(group.events)
        group.events.append(event)
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
            group.outcomes = record_many(attribution=attribution, events=group.events)
        except BaseException as exc:
            group.error = exc
            raise
        finally:
            group.done.set()
    return group.outcomes[index]
