"""The OpenAI-compatible /v1 API: request parsing (request.py), response objects
(response.py), views and routes. The exchange itself is chat/completions.py."""
