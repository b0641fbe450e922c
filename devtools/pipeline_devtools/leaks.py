"""A password to start servers with, and the check that an output never names it in any of its forms."""

from __future__ import annotations

import urllib.parse

PASSWORD = "Pw-leak-check-7f3a@9"
"""'@' so a URL holds it percent-encoded."""


def leaks(text: str) -> list[str]:
    """The forms of :data:`PASSWORD` found in ``text``."""
    return [form for form in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), PASSWORD.split("@")[0]) if form in text]


def checked(where: str, text: str) -> str:
    """``text``, after failing the caller (AssertionError) if it holds the password."""
    assert not leaks(text), f"the password is in {where}: {text[-3000:]}"
    return text
