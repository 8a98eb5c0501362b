def test_usage_is_priced_and_debited(tenant, prices):
    tenant.grant("10")
    tenant.allocate("5")
    key, secret = tenant.key("usage", team=tenant.team)
    response = tenant.client(secret).post(
        "/api/v1/credits/usage",
        {"id": "e1", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 200},
        format="json",
    )
    assert response.status_code == 201, response.content
    # gpt-4o: 2.5e-06 per input token, 1e-05 per output token (LiteLLM table, July 2026)
    assert response.json()["cost"] == "0.004500000000"
    assert response.json()["balance_after"] == "4.995500000000"
