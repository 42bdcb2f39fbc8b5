"""`manage.py check --deploy`: the model a production server would serve."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def check_model_provider(app_configs, **kwargs):
    from chat.llm import chosen_provider_name, get_provider, unavailable_reason

    name = chosen_provider_name()
    if name == "local" and not settings.DEBUG:
        return [
            Warning(
                "LLM_PROVIDER=local with DEBUG=false: users are served (and billed for) the "
                "offline model's canned text, not Gemini.",
                hint="Set LLM_PROVIDER=auto or gemini and GEMINI_API_KEY in production.",
                id="chat.W001",
            )
        ]
    reason = unavailable_reason(get_provider()) if name == "gemini" else None
    if reason is not None:
        return [
            Warning(
                f"{reason} Every message will be answered 503 llm_unavailable.",
                hint="Set GEMINI_API_KEY in the environment.",
                id="chat.W002",
            )
        ]
    return []
