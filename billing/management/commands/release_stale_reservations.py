from django.core.management.base import BaseCommand

from billing.services import release_stale_reservations


class Command(BaseCommand):
    help = (
        "Release token reservations past their expiry (left by a worker killed mid-stream). "
        "Run it every few minutes from cron; each release writes a ledger entry."
    )

    def handle(self, *args, **options):
        released = release_stale_reservations()
        self.stdout.write(self.style.SUCCESS(f"Released {released} stale reservation(s)."))
