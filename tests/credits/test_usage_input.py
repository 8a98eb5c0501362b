"""The usage event's validation (`UsageEventInput.validated`): events of plain values take a
path without DRF's machinery per field (`_plain`), which must give exactly what DRF gives, and
leave every other event, and every error, to DRF."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from credits.apis_usage import UsageEventInput
from portal.api import serializer_shared

now = datetime.now(tz=UTC)
TEXT = st.one_of(
    st.sampled_from(["ev-1", "a:1", "gpt-4o", "c-7"]),
    st.sampled_from(["x" * 255, "x" * 256, "", " a", "a\t", "é", "\ud800", "a\x00", None, 7]),
    st.text(max_size=5),
)
COUNT = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.sampled_from([100_000, 100_001, 2_000_000_000, 2_000_000_001, -1, True, None, 1.5, "12"]),
)
FIELDS = {
    "operation": st.sampled_from(["chat", "image", "batch", "nope", "", None, 1]),
    **{name: COUNT for name in UsageEventInput._COUNTS},
    "conversation_id": TEXT,
    "metadata": st.one_of(
        st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=3),
        st.sampled_from([{"k": "v" * 9000}, [], None, "x"]),
    ),
    "occurred_at": st.sampled_from(
        [
            (now - timedelta(hours=1)).isoformat(),
            "2026-11-30T10:00:00Z",
            "2026-11-30T10:00:00+05:30",
            "2026-11-30",
            "not a time",
            None,
            (now + timedelta(days=1)).isoformat(),
        ]
    ),
    "cost": st.sampled_from([0.5, "1.25", None]),
    "usage": st.sampled_from([{"prompt_tokens": 5}, None]),
    "extra": st.just(1),
}
EVENTS = st.one_of(
    st.fixed_dictionaries({"id": TEXT, "model": TEXT}, optional=FIELDS),
    st.fixed_dictionaries({}, optional={"id": TEXT, "model": TEXT, **FIELDS}),
    st.sampled_from([[], "x", None]),
)


def drf(raw):
    try:
        return dict(serializer_shared(UsageEventInput).run_validation(raw))
    except serializers.ValidationError as exc:
        return ("error", exc.detail)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_the_plain_path_gives_what_drf_gives_or_leaves_the_event_to_it(raw):
    plain = serializer_shared(UsageEventInput)._plain(raw)
    if plain is not None:
        assert plain == drf(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "a", "model": "gpt-4o"},
        {"id": "a", "model": "gpt-4o", "prompt_tokens": 812, "completion_tokens": 43},
        {"id": "a:1", "model": "m", "operation": "embedding", "conversation_id": "c",
         "metadata": {"k": 1}, "occurred_at": "2026-11-30T10:00:00Z", "images": 2,
         "cached_tokens": 0, "reasoning_tokens": 0},
    ],
)  # fmt: skip
def test_the_events_clients_send_take_the_plain_path(raw):
    one = serializer_shared(UsageEventInput)
    assert one._plain(raw) is not None
    assert one.validated(raw) == drf(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "a", "model": "gpt-4o", "cost": 0.5},  # a cost: DRF's decimal field
        {"id": "a", "model": "gpt-4o", "usage": {"prompt_tokens": 3}},  # a usage object
        {"id": " a", "model": "gpt-4o"},  # DRF trims it
        {"id": 7, "model": "gpt-4o"},  # DRF makes it "7"
        {"id": "a", "model": "gpt-4o", "cached_tokens": 5, "prompt_tokens": 1},  # an error
    ],
)
def test_anything_else_is_left_to_drf(raw):
    one = serializer_shared(UsageEventInput)
    assert one._plain(raw) is None
    try:
        assert one.validated(raw) == drf(raw)
    except serializers.ValidationError as exc:
        assert drf(raw) == ("error", exc.detail)
