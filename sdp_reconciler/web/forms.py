"""Reading the login form: ``application/x-www-form-urlencoded``, bounded, without extra deps.

Starlette's ``request.form()`` needs python-multipart for a two-field form; this reads at most
``MAX_FORM_BYTES`` and parses with the standard library. A larger body is refused.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

MAX_FORM_BYTES = 8 * 1024


class FormTooLarge(Exception):
    pass


async def read_form(request: Request) -> dict[str, str]:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge(f"form over {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True,
                      max_num_fields=20)
    return {k: v[0] for k, v in fields.items() if v}
