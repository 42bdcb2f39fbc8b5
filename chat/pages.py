from django.conf import settings
from django.views.generic import TemplateView


class ChatPageView(TemplateView):
    """The browser chat page: a template and a little JavaScript over the public API."""

    template_name = "chat/index.html"

    def get_context_data(self, **kwargs):
        # The page checks the length in code points, as the API does, before it sends.
        return {**super().get_context_data(**kwargs), "max_chars": settings.MAX_TOKENS_PER_MESSAGE}
