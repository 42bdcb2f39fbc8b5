"""OpenAPI descriptions of the /v1 objects (documentation only: requests are validated by
chat/openai_api/request.py, which names the offending parameter the way OpenAI does)."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

_message = inline_serializer(
    "ChatCompletionMessage",
    {
        "role": serializers.ChoiceField(choices=["system", "developer", "user", "assistant"]),
        "content": serializers.JSONField(
            help_text="A string, or an array of {'type': 'text', 'text': ...} parts."
        ),
        "name": serializers.CharField(required=False, help_text="Accepted and ignored."),
    },
)

CompletionRequestSchema = inline_serializer(
    "ChatCompletionCreate",
    {
        "model": serializers.CharField(help_text="The id GET /v1/models lists."),
        "messages": serializers.ListField(child=_message, min_length=1),
        "stream": serializers.BooleanField(required=False, default=False),
        "stream_options": inline_serializer(
            "ChatCompletionStreamOptions",
            {"include_usage": serializers.BooleanField(required=False)},
            required=False,
        ),
        "max_completion_tokens": serializers.IntegerField(
            min_value=1, required=False, help_text="Capped at GEMINI_MAX_OUTPUT_TOKENS."
        ),
        "max_tokens": serializers.IntegerField(
            min_value=1, required=False, help_text="max_completion_tokens' older name."
        ),
        "temperature": serializers.FloatField(min_value=0, max_value=2, required=False),
        "top_p": serializers.FloatField(min_value=0, max_value=1, required=False),
        "stop": serializers.JSONField(
            required=False, help_text="A string or an array of up to 4 strings."
        ),
    },
)

_usage = inline_serializer(
    "CompletionUsage",
    {
        "prompt_tokens": serializers.IntegerField(),
        "completion_tokens": serializers.IntegerField(),
        "total_tokens": serializers.IntegerField(),
    },
)

CompletionSchema = inline_serializer(
    "ChatCompletion",
    {
        "id": serializers.CharField(),
        "object": serializers.ChoiceField(choices=["chat.completion"]),
        "created": serializers.IntegerField(),
        "model": serializers.CharField(),
        "choices": serializers.ListField(
            child=inline_serializer(
                "ChatCompletionChoice",
                {
                    "index": serializers.IntegerField(),
                    "message": inline_serializer(
                        "ChatCompletionAnswer",
                        {
                            "role": serializers.ChoiceField(choices=["assistant"]),
                            "content": serializers.CharField(),
                        },
                    ),
                    "finish_reason": serializers.ChoiceField(
                        choices=["stop", "length", "content_filter"]
                    ),
                },
            )
        ),
        "usage": _usage,
    },
)

_model = inline_serializer(
    "Model",
    {
        "id": serializers.CharField(),
        "object": serializers.ChoiceField(choices=["model"]),
        "created": serializers.IntegerField(),
        "owned_by": serializers.CharField(),
    },
)

ModelSchema = _model

ModelListSchema = inline_serializer(
    "ModelList",
    {
        "object": serializers.ChoiceField(choices=["list"]),
        "data": serializers.ListField(child=_model),
    },
)

STREAM_DESCRIPTION = (
    "With `stream: true`, Server-Sent Events in OpenAI's format: `data: <chat.completion.chunk>` "
    "per piece of text (`choices[0].delta.content`), a last chunk with `finish_reason` "
    "(stop, length, content_filter), a usage chunk (`choices: []`, `usage`) when "
    "`stream_options.include_usage`, then `data: [DONE]`. A failure after output began ends "
    'the stream with `data: {"error": {...}}` and no [DONE].'
)
