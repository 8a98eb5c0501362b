"""CSV exports are safe to open in a spreadsheet: text a client chose that starts like a formula
is written as text (portal/spreadsheet.py), in the usage export and in the report."""

from __future__ import annotations

import csv
import io

from portal.spreadsheet import cell

FORMULA = '=HYPERLINK("http://evil.example","click")'


def test_cells_that_start_like_formulas_become_text():
    for value in (FORMULA, "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert cell(value) == "'" + value
    for value in ("gpt-4o", "openai/gpt-4o", "2026-11-29T10:00:00+00:00", 12, None):
        assert cell(value) == value


def test_the_usage_export_and_report_write_formulas_as_text(client, tenant, prices):
    tenant.grant("10")
    _, secret = tenant.key("usage")
    body = {"id": "-1+1", "model": "gpt-4o", "cost": "0.1", "conversation_id": FORMULA}
    assert tenant.client(secret).post("/api/v1/credits/usage", body).status_code == 201
    client.force_login(tenant.owner)
    response = client.get("/o/acme/usage/export.csv")
    export = b"".join(response.streaming_content).decode()
    (row,) = list(csv.DictReader(io.StringIO(export)))
    assert row["conversation_id"] == "'" + FORMULA and row["event_id"] == "'-1+1"
    _, manager = tenant.key("management")
    report = tenant.client(manager).get(
        "/api/v1/credits/report",
        {"format": "csv", "period": "monthly", "breakdowns": "conversation"},
    )
    rows = list(csv.reader(io.StringIO(report.content.decode())))
    assert ["conversation", "'" + FORMULA] in [r[:2] for r in rows]
    assert not any(c.startswith("=") for r in rows for c in r)
