"""How every Redis client of the pipeline connects: the online store (sync and asyncio clients), the
shared-state check and the Celery broker and result backend.

Authentication comes from the URL: ``redis://:PASSWORD@host:port/db`` (``requirepass``) or
``redis://USER:PASSWORD@host:port/db`` (an ACL user); a password with ``@``, ``:`` or ``/`` is
percent-encoded. ``rediss://`` connects over TLS and verifies the server's certificate against the
CA file given (``PIPELINE_REDIS_CA_FILE``; empty: the system's CAs). The password is registered with
:func:`pipeline.redaction.register_secret` as soon as a URL is used, so it is masked wherever it
might appear, and :func:`display_url` is the form every message names.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from pipeline.redaction import redact, register_secret

SCHEMES = ("redis", "rediss", "unix")


def is_tls(url: str) -> bool:
    return url.strip().lower().startswith("rediss://")


def display_url(url: str) -> str:
    """``url`` as messages name it: the password masked."""
    return redact(url)


def register_url_secret(url: str) -> None:
    """Mask the URL's password (raw and decoded) wherever it appears from now on."""
    password = urllib.parse.urlsplit(url).password
    if password:
        register_secret(password)
        register_secret(urllib.parse.unquote(password))


def _checked_ca_file(url: str, ca_file: str) -> str | None:
    if not ca_file:
        return None
    if not Path(ca_file).is_file():
        raise ValueError(f"PIPELINE_REDIS_CA_FILE={ca_file} is not a file (the CA that signed the certificate of "
                         f"{display_url(url)})")
    return ca_file


def client_options(url: str, ca_file: str = "") -> dict:
    """Keyword arguments for ``redis.Redis.from_url`` (and its asyncio twin) besides timeouts: the TLS
    settings of a ``rediss://`` URL. Refuses an unknown scheme naming the (masked) URL."""
    register_url_secret(url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"Redis URL {display_url(url)!r} must start with redis://, rediss:// (TLS) or unix://")
    if not is_tls(url):
        return {}
    return {"ssl_cert_reqs": "required", "ssl_ca_certs": _checked_ca_file(url, ca_file)}


def celery_ssl_options(url: str, ca_file: str = "") -> dict | None:
    """``broker_use_ssl`` / ``redis_backend_use_ssl`` for a Celery URL: None unless it is ``rediss://``."""
    register_url_secret(url)
    if not is_tls(url):
        return None
    options = {"ssl_cert_reqs": "required"}  # a string: the runs' stored configuration holds it as JSON
    checked = _checked_ca_file(url, ca_file)
    if checked:
        options["ssl_ca_certs"] = checked
    return options
