"""Content-Security-Policy for our own HTML pages. Django 5.2 has none built in (6.0 adds
one), so a page opts in with this decorator.

The chat page's policy is strict because the page keeps a refresh token in sessionStorage:
script injection is what would steal it. No inline script or style, scripts only from our
own origin, requests only to our own origin, no plugins, no framing, no <base> rewriting, and
Trusted Types: an HTML sink (innerHTML, ...) accepts only values made by DOMPurify's policy,
so model text that skipped the sanitiser throws instead of reaching the DOM. Images are
limited to our origin and data: URLs, so a reply cannot load a tracking pixel or leak text
through an image URL.
"""

from __future__ import annotations

from functools import wraps

CHAT_PAGE_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types dompurify",
    ]
)


def content_security_policy(policy: str):
    """Set `Content-Security-Policy: <policy>` on the view's responses."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response.headers["Content-Security-Policy"] = policy
            return response

        return wrapped

    return decorator
