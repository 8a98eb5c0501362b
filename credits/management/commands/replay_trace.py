"""`manage.py replay_trace <csv>`: replay an Azure or BurstGPT trace as usage events (see
`credits.replay` for the formats, the event ids and the time rules)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.selectors import team_get
from credits.models import UsageEvent
from credits.replay import ApiSink, ServiceSink, parse_start, replay, trace_events, trace_read
from credits.services.usage import Attribution
from portal.commands import organization_arg
from portal.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Replay a request trace (Azure LLM inference 2023, BurstGPT_1 or BurstGPT_3 CSV) as "
        "usage events, in-process (--via service) or over the REST API (--via api). Idempotent: "
        "event ids are replay:<team>:<file stem>:<row>, so a second replay records nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("csv", help="The trace file.")
        parser.add_argument("--org", help="Organization slug (required with --via service).")
        parser.add_argument(
            "--team",
            help="Team slug charged (default: the pool; with --via "
            "api the key decides, and this names the event ids).",
        )
        parser.add_argument(
            "--model",
            default="",
            help="Price-table model for rows whose trace "
            "names none (required for Azure traces), e.g. gpt-4o.",
        )
        parser.add_argument(
            "--operation", default=UsageEvent.Operation.CHAT, choices=UsageEvent.Operation.values
        )
        parser.add_argument(
            "--start",
            help="ISO date or time (UTC if no zone). Azure: the "
            "first row lands here (default: the trace's own times). BurstGPT: "
            "the day its offsets count from (default 2023-11-16).",
        )
        parser.add_argument("--rows", type=int, help="Replay only the first N rows.")
        pace = parser.add_mutually_exclusive_group()
        pace.add_argument("--speed", type=float, help="Real time divided by N.")
        pace.add_argument("--fast", action="store_true", help="As fast as possible (default).")
        parser.add_argument("--via", choices=["service", "api"], default="service")
        parser.add_argument(
            "--url", help="Portal base URL for --via api, e.g. http://127.0.0.1:8000"
        )
        parser.add_argument("--key", help="A usage API key's secret for --via api.")
        parser.add_argument(
            "--batch",
            type=int,
            help="Events per transaction (service, "
            "default 500) or per request (api, default and at most 1,000).",
        )

    def handle(
        self,
        *args,
        csv,
        org,
        team,
        model,
        operation,
        start,
        rows,
        speed,
        fast,
        via,
        url,
        key,
        batch,
        **options,
    ):
        if speed is not None and speed <= 0:
            raise CommandError("--speed must be greater than 0.")
        if rows is not None and rows < 1:
            raise CommandError("--rows must be at least 1.")
        try:
            trace = trace_read(csv, start=parse_start(start) if start else None, rows=rows)
            events = trace_events(trace, team_slug=team or "pool", model=model, operation=operation)
            sink = self._sink(via, org, team, url, key, batch)
            try:
                with tqdm(
                    total=len(events),
                    unit="event",
                    file=sys.stderr,
                    desc=trace.path.name,
                    disable=options["verbosity"] < 1,
                ) as bar:
                    summary = replay(events, sink, speed=speed, progress=bar.update)
            finally:
                sink.close()
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{trace.path.name} ({trace.format}): {summary.line()}")

    def _sink(self, via, org, team, url, key, batch):
        if via == "api":
            if not url or not key:
                raise CommandError("--via api needs --url and --key (a usage key's secret).")
            return ApiSink(url, key, **({"batch_size": batch} if batch else {}))
        if not org:
            raise CommandError("--via service needs --org <slug>.")
        organization = organization_arg(org)
        team_obj = team_get(organization=organization, slug=team) if team else None
        attribution = Attribution(organization=organization, team=team_obj, api_key=None)
        return ServiceSink(attribution, **({"batch_size": batch} if batch else {}))
