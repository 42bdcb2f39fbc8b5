import json

from django.core.management.base import BaseCommand

from billing.tokens import clear_token_cache, token_cache_stats


class Command(BaseCommand):
    help = "Show the token-count cache statistics (shared by every node when CACHE_URL is Redis)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--clear", action="store_true", help="clear the cache and statistics")

    def handle(self, *args, json: bool = False, clear: bool = False, **options):
        if clear:
            clear_token_cache()
            self.stdout.write("Token cache cleared.")
        stats = token_cache_stats()
        if json:
            self.stdout.write(_dumps(stats))
            return
        width = max(len(name) for name in stats)
        for name, value in stats.items():
            if value is None:
                shown = "unknown"  # the cache backend cannot list its keys
            elif name == "hit_rate":
                shown = f"{value:.1%}"
            else:
                shown = f"{value:,}"
            self.stdout.write(f"{name.replace('_', ' '):<{width}}  {shown:>12}")


def _dumps(stats: dict) -> str:
    return json.dumps(stats, indent=2, sort_keys=True)
