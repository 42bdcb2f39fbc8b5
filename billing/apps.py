from django.apps import AppConfig
from django.core.signals import request_finished


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing.tokens import flush_token_stats

        # A process's token statistics reach the shared counters when the request that
        # counted them ends, so an idle worker never keeps its last counts to itself.
        request_finished.connect(flush_token_stats, dispatch_uid="billing.flush_token_stats")
