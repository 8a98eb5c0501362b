from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from credits.services.usage_partitions import (
    usage_partition_detach,
    usage_partitions_ensure,
    usage_partitions_list,
)
from portal.commands import command_errors


class Command(BaseCommand):
    help = (
        "The usage table's monthly partitions (PostgreSQL): list them with their row estimates, "
        "create the months ahead (--ensure), or detach a past month to archive (--detach)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--ensure", action="store_true", help="Create the missing months (as the beat task)."
        )
        parser.add_argument(
            "--months-ahead", type=int, default=2, help="With --ensure: months after this one."
        )
        parser.add_argument(
            "--detach",
            metavar="YYYY-MM",
            help="Detach this UTC month's partition (past and rolled up); the table stays.",
        )

    def handle(self, *args, ensure, months_ahead, detach, **options):
        if connection.vendor != "postgresql":
            self.stdout.write("The usage table is partitioned on PostgreSQL only: nothing to do.")
            return
        if ensure:
            created = usage_partitions_ensure(months_ahead=months_ahead)
            self.stdout.write(f"Created: {', '.join(created)}." if created else "Nothing missing.")
        if detach:
            try:
                month = date.fromisoformat(f"{detach}-01")
            except ValueError:
                raise CommandError(f"--detach: a month as YYYY-MM, not '{detach}'.") from None
            with command_errors():
                partition = usage_partition_detach(month=month)
            self.stdout.write(
                f"Detached {partition.name} (about {partition.rows or 0:,} events): its events "
                "have left the usage table; the rollups keep them. The table is still in the "
                f"database: archive it (pg_dump --table={partition.name}), then "
                f"DROP TABLE {partition.name}."
            )
        self.stdout.write(f"{'partition':<32} {'from (UTC)':<12} {'to':<12} {'rows (est.)':>12}")
        for p in usage_partitions_list():
            start = f"{p.start:%Y-%m-%d}" if p.start else "DEFAULT"
            end = f"{p.end:%Y-%m-%d}" if p.end else ""
            rows = f"{p.rows:,}" if p.rows is not None else "?"
            self.stdout.write(f"{p.name:<32} {start:<12} {end:<12} {rows:>12}")
