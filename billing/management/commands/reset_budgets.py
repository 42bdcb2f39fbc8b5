from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from billing.periods import current_period
from billing.selectors import budget_for
from billing.services import reset_budget

PROGRESS_EVERY = 500


class Command(BaseCommand):
    help = (
        "Reset (or open) the current month's token budget for every user, or one user. "
        "Idempotent: a second run changes nothing. Each reset writes a ledger entry."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", help="only this username")
        parser.add_argument("--dry-run", action="store_true", help="show, change nothing")

    def handle(self, *args, user=None, dry_run=False, **options):
        users = get_user_model().objects.order_by("pk")
        if user:
            users = users.filter(username=user)
            if not users.exists():
                raise CommandError(f"No user named {user!r}.")
        total = users.count()
        period = current_period()
        self.stdout.write(
            f"{'Would reset' if dry_run else 'Resetting'} {period:%Y-%m} for {total} user(s)"
        )
        changed = 0
        for index, account in enumerate(users.iterator(), start=1):
            if dry_run:
                budget = budget_for(user=account, period=period)
                if budget.used:
                    changed += 1
                    self.stdout.write(f"  {account.username}: used {budget.used} -> 0")
            elif reset_budget(user=account, period=period, note="reset_budgets command"):
                changed += 1
            if total > PROGRESS_EVERY and index % PROGRESS_EVERY == 0:
                self.stdout.write(f"  {index}/{total} users")
        verb = "would be reset" if dry_run else "reset"
        self.stdout.write(
            self.style.SUCCESS(f"{changed} budget(s) {verb}; {total - changed} already at zero.")
        )
