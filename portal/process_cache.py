"""Rows the hot paths read on every request (API keys, an organization's upstreams and
guardrails), kept in the process for about a second instead of read each time.

A `ProcessCache` keeps what `read()` returned per key for `seconds` (on time.monotonic()). So a
change made elsewhere reaches every worker within that time, and the process that makes it at
once: the services that change such rows call `evict()`, which forgets everything now and again
when their transaction commits (a request that read the old rows meanwhile must not keep them).
Concurrent misses of one key make one read: the others wait for it (a lock per key). A flood of
keys (unknown API keys, say) starts the cache over rather than grow it past `size`.

Values are shared between the requests of a process: a caller that changes what it gets works
on a copy (`fresh` copies a model instance).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.db import transaction

T = TypeVar("T")
_ALL: list[ProcessCache] = []


def evict_all_now() -> None:
    """Forget what every cache of this process keeps (the tests, between tests)."""
    for cache in _ALL:
        cache.evict_now()


class ProcessCache(Generic[T]):
    def __init__(self, seconds: float, *, size: int = 10_000):
        _ALL.append(self)
        self.seconds = seconds
        self.size = size
        self.lock = threading.Lock()  # guards `_values`; callers may hold it to mark a value
        self._values: dict[Hashable, tuple[float, T]] = {}
        self._reading: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, read: Callable[[], T]) -> T:
        """The value of `key`: as read less than `seconds` ago, else `read()` (once, however many
        threads miss at the same time)."""
        hit = self._values.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self._read_lock(key):
            hit = self._values.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            started = time.monotonic()
            value = read()
            with self.lock:
                if len(self._values) >= self.size:
                    self._values.clear()
                self._values[key] = (started + self.seconds, value)
            return value

    def peek(self, key: Hashable) -> T | None:
        """The value kept for `key` (expired or not), or None; hold `lock` to change it."""
        hit = self._values.get(key)
        return hit[1] if hit is not None else None

    def evict(self) -> None:
        """Forget every value now, and again when the current transaction commits."""
        self.evict_now()
        transaction.on_commit(self.evict_now)

    def evict_now(self) -> None:
        with self.lock:
            self._values.clear()

    def _read_lock(self, key: Hashable) -> threading.Lock:
        with self.lock:
            if len(self._reading) >= self.size:
                self._reading.clear()
            return self._reading.setdefault(key, threading.Lock())


_MUTABLE = (dict, list, set)


def fresh(instance):
    """A copy of a model instance (or None) and of the related instances loaded with it, sharing
    nothing a request could change (its own `_state` and field cache; lists and dicts copied),
    at a fraction of `copy.deepcopy`'s cost (immutable values, the most of a row, are shared)."""
    if instance is None:
        return None
    new = instance.__class__.__new__(instance.__class__)
    new.__dict__ = {
        name: copy.deepcopy(value) if isinstance(value, _MUTABLE) else value
        for name, value in instance.__dict__.items()
    }
    new._state = copy.copy(instance._state)
    new._state.fields_cache = {
        name: fresh(related) for name, related in instance._state.fields_cache.items()
    }
    return new
