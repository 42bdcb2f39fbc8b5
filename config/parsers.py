"""Kept apart from config/api.py: DRF reads DEFAULT_PARSER_CLASSES while rest_framework.views
is imported, and config/api.py imports that module."""

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: JSON nested too deeply for Python's parser is a 400, not a
    RecursionError and a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
