"""CSV of ledger entries, streamed: rows come from a server-side cursor in chunks and leave
as bytes in batches, so neither the query nor the response is ever held whole in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date

from django.http import StreamingHttpResponse

from billing.prices import format_amount
from billing.selectors import EXPORT_COLUMNS

ROWS_PER_WRITE = 500


def csv_lines(rows: Iterable[tuple]) -> Iterator[bytes]:
    """The header, then the rows (EXPORT_COLUMNS order), ROWS_PER_WRITE to a chunk.

    Datetimes are ISO 8601 in UTC, costs decimal strings (empty when unpriced), ids plain."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    cost_at = EXPORT_COLUMNS.index("cost")
    created_at = EXPORT_COLUMNS.index("created_at")
    texts = [EXPORT_COLUMNS.index(name) for name in ("username", "note")]
    pending = 0
    for row in rows:
        row = list(row)
        row[created_at] = row[created_at].isoformat()
        row[cost_at] = "" if row[cost_at] is None else format_amount(row[cost_at])
        for index in texts:
            row[index] = _inert(row[index])
        writer.writerow(row)
        pending += 1
        if pending == ROWS_PER_WRITE:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode()


def csv_response(rows: Iterable[tuple], *, first: date, last: date, who: str):
    filename = f"ledger-{who}-{first:%Y%m%d}-{last:%Y%m%d}.csv"
    return StreamingHttpResponse(
        csv_lines(rows),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _inert(text: str | None) -> str:
    """A spreadsheet must not run a user's text as a formula (OWASP's CSV injection advice)."""
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text or ""
