from django.core.management.base import BaseCommand

from billing.services import release_stale_reservations
from chat.reply.eventlog import shared_log
from chat.reply.sweep import sweep_runs


class Command(BaseCommand):
    help = (
        "End reply runs whose worker died (no heartbeat for REPLY_STALE_S): keep their text, "
        "bill it by our count. Then release stale reservations and expire old event logs. "
        "Run it every minute or few from cron."
    )

    def handle(self, *args, **options):
        ended = sweep_runs()
        released = release_stale_reservations()
        expired = shared_log().expire()
        self.stdout.write(
            self.style.SUCCESS(
                f"Ended {ended} dead run(s); released {released} stale reservation(s); "
                f"deleted {expired} expired event(s)."
            )
        )
