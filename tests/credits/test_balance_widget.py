"""The header's balance widget is polled every 3 s by every open page: its cost is pinned, and
it does not grow with usage history."""

from __future__ import annotations

from accounts.roles import Role

from ..conftest import SYSTEM

# session, user, organization, membership, the accounts drawn on; a member: + their teams (3)
WIDGET_STATEMENTS = 5


def _widget(client) -> str:
    response = client.get("/o/acme/balance/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    return response.content.decode()


def test_the_widget_costs_the_same_whatever_the_history(
    client, tenant, prices, django_assert_max_num_queries
):
    tenant.grant("10")
    tenant.allocate("2")
    client.force_login(tenant.owner)
    _widget(client)  # the session learns the organization
    with django_assert_max_num_queries(WIDGET_STATEMENTS):
        assert "10.00" in _widget(client)
    _, secret = tenant.key("usage")
    api = tenant.client(secret)
    events = [{"id": f"e{i}", "model": "gpt-4o", "cost": "0.01"} for i in range(200)]
    assert api.post("/api/v1/credits/usage", {"events": events}, format="json").status_code == 207
    with django_assert_max_num_queries(WIDGET_STATEMENTS):
        assert "8.00" in _widget(client)


def test_a_member_sees_what_their_teams_can_draw_on(client, tenant, django_assert_max_num_queries):
    from accounts.services import team_member_set

    tenant.grant("10")
    tenant.allocate("2")
    member = tenant.member(Role.MEMBER)
    team_member_set(team=tenant.team, user=member, actor=SYSTEM)
    client.force_login(member)
    _widget(client)
    with django_assert_max_num_queries(WIDGET_STATEMENTS + 3):
        text = _widget(client)
    assert "2.00" in text and "10.00" not in text
