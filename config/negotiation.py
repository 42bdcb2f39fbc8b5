"""Content negotiation for the whole API (REST_FRAMEWORK's DEFAULT_CONTENT_NEGOTIATION_CLASS).

A module of its own: DRF imports it while it loads its settings, before config.api can be.
"""

from rest_framework import exceptions as drf_exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class AnyAcceptNegotiation(DefaultContentNegotiation):
    """The API's content negotiation (REST_FRAMEWORK's default): DRF's own, except that an
    Accept header no renderer can meet is disregarded, as RFC 9110 allows, and the first
    renderer (JSON, the envelope) answers instead of a 406. SSE clients send
    `Accept: text/event-stream` to the message and resume endpoints, whose success is not
    rendered by DRF, and some (httpx-sse) go on sending it to every endpoint; the CSV export
    is asked for `text/csv`. Views with renderers of their own (the OpenAPI schema) still
    negotiate among them.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except drf_exceptions.NotAcceptable:
            renderer = renderers[0]
            return renderer, renderer.media_type
