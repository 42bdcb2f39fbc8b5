from django.views.generic import TemplateView


class ChatPageView(TemplateView):
    """The browser chat page: a template and a little JavaScript over the public API."""

    template_name = "chat/index.html"
