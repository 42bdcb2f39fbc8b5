"""Model text made storable before it is stored or sent."""

import re

# NUL: PostgreSQL text cannot hold it. A lone surrogate (a JSON "\ud800" escape decodes to
# one): UTF-8 cannot encode it, so neither PostgreSQL, SQLite nor the SSE body can take it.
# In a Python str every surrogate code point is a lone one (json.loads joins valid pairs).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)
