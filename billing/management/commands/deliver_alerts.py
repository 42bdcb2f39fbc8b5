from django.conf import settings
from django.core.management.base import BaseCommand

from billing.alerts import deliver_due_alerts


class Command(BaseCommand):
    help = (
        "Send the budget-alert webhooks that are due (first attempts the background thread "
        "missed, and retries with exponential backoff). Run it every minute from cron."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=500, help="at most this many per run")

    def handle(self, *args, **options):
        if not settings.ALERT_WEBHOOK_URL:
            self.stdout.write("ALERT_WEBHOOK_URL is not set: nothing to deliver.")
            return
        counts = deliver_due_alerts(limit=options["limit"])
        self.stdout.write(
            self.style.SUCCESS(
                "Budget alerts: {delivered} delivered, {pending} to retry, {failed} given up, "
                "{skipped} taken by another process.".format(**counts)
            )
        )
