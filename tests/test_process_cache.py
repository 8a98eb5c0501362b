"""`portal.process_cache.ProcessCache`: values kept per process for a time, one read for
concurrent misses, eviction now and at commit, a bounded size."""

import time

import pytest
from django.db import transaction

from portal.process_cache import ProcessCache
from tests.credits.test_concurrency import in_threads


def test_a_value_is_read_once_within_its_time_and_again_after():
    cache = ProcessCache(0.2)
    reads = []
    read = lambda: reads.append(1) or len(reads)  # noqa: E731
    assert cache.get("k", read) == 1
    assert cache.get("k", read) == 1
    time.sleep(0.25)
    assert cache.get("k", read) == 2


def test_concurrent_misses_of_one_key_make_one_read():
    cache = ProcessCache(5)
    reads = []

    def read():
        time.sleep(0.1)
        reads.append(1)
        return "value"

    assert in_threads(8, lambda i: [cache.get("k", read)]) == ["value"] * 8
    assert len(reads) == 1


@pytest.mark.django_db(transaction=True)
def test_evict_forgets_now_and_again_at_commit():
    """A value read after the change but before its commit (another request's, say) would be
    the old one: the commit forgets it too."""
    cache = ProcessCache(60)
    cache.get("k", lambda: "old")
    with transaction.atomic():
        cache.evict()
        assert cache.get("k", lambda: "read before the commit") == "read before the commit"
    assert cache.get("k", lambda: "new") == "new"


def test_a_flood_of_keys_starts_over_instead_of_growing():
    cache = ProcessCache(60, size=3)
    for k in range(10):
        cache.get(k, lambda k=k: k)
    assert len(cache._values) <= 3
    assert cache.get(9, lambda: "read again") == 9
