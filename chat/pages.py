from django.conf import settings
from django.utils.decorators import method_decorator
from django.views.generic import TemplateView

from config.csp import CHAT_PAGE_POLICY, content_security_policy


@method_decorator(content_security_policy(CHAT_PAGE_POLICY), name="dispatch")
class ChatPageView(TemplateView):
    """The browser chat page: a template and a little JavaScript over the public API, under a
    strict Content-Security-Policy (config/csp.py)."""

    template_name = "chat/index.html"

    def get_context_data(self, **kwargs):
        # The page checks the length in code points, as the API does, before it sends.
        return {**super().get_context_data(**kwargs), "max_chars": settings.MAX_TOKENS_PER_MESSAGE}
