from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from chat import checks  # noqa: F401 - registers the deploy checks
        from config.health import register_health_check

        register_health_check("model", _model_state)


def _model_state() -> dict:
    """/health's "model": the provider, its model and whether it can answer."""
    from chat.llm import provider_state

    return provider_state()
