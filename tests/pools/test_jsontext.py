"""JSON text of payloads and results (pools/jsontext.py)."""

from __future__ import annotations

import datetime

from pools import jsontext


def test_size_is_the_byte_length_of_the_stored_text() -> None:
    """The worker's result-size check measures what the store will keep, without making the text."""
    for value in ({"items": list(range(2_000))}, {"é": "ü" * 10, "n": None, "t": (1, 2)}, [1.5, True, "x\n"],
                  {"when": datetime.datetime(2026, 1, 2, 3, 4, 5)}, {"odd": object()}, b"\xff\xfe", "😀"):
        assert jsontext.size(value) == len(jsontext.dumps(value).encode())
