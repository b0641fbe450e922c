"""The clients a BigQuery source reads through: REST (google-cloud-bigquery) and, when installed,
the Storage Read API over gRPC. Built once each, on first use."""

from __future__ import annotations

import contextlib
import ctypes
import functools
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.bigquery.errors import translated
from pipeline.data.sources import SourceConfigError
from pipeline.settings.bigquery import BigQuerySettings

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# As Google's own transport: no cap on a message (the server sizes them).
_UNCAPPED_MESSAGES = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
# A fixed HTTP/2 window for the read stream instead of gRPC's BDP probe, which widens the window with
# the bytes that arrive while a ping is unanswered: over a long link, or from a server late with its
# answers on a busy machine, the server could then send many messages ahead of the reader, all held
# in memory. The fixed read-ahead is one message (the API's are at most 10 MiB), so the next one
# still arrives while this one is written.
_FIXED_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 10 << 20)]


@dataclass
class Clients:
    settings: BigQuerySettings
    _built: dict = field(default_factory=dict, repr=False)

    def credentials(self):
        """Anonymous for an emulator, else the key file, else application-default credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.oauth2 import service_account

        if self.settings.endpoint:
            return AnonymousCredentials()
        if self.settings.credentials_file:
            path = Path(self.settings.credentials_file)
            if not path.is_file():
                raise SourceConfigError(f"GOOGLE_APPLICATION_CREDENTIALS={path}: no such key file")
            return service_account.Credentials.from_service_account_file(str(path), scopes=_SCOPES)
        import google.auth

        with translated("BigQuery credentials"):
            credentials, _ = google.auth.default(scopes=_SCOPES)
        return credentials

    def bigquery(self):
        if "bq" not in self._built:
            from google.cloud import bigquery

            options = {"api_endpoint": self.settings.endpoint} if self.settings.endpoint else None
            self._built["bq"] = bigquery.Client(project=self.settings.project, credentials=self.credentials(),
                                                location=self.settings.location or None, client_options=options)
        return self._built["bq"]

    def storage(self):
        """The Storage Read client, or None when reads go over REST (not installed, or read_api=rest)."""
        if "storage" not in self._built:
            self._built["storage"] = None if self.settings.read_api == "rest" else self._storage_client()
        return self._built["storage"]

    def _storage_client(self):
        _large_buffers_returned_at_once()
        try:
            from google.cloud.bigquery_storage_v1 import BigQueryReadClient
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport
        except ImportError:
            if self.settings.read_api == "storage":
                raise SourceConfigError("read_api=storage needs google-cloud-bigquery-storage "
                                        "(pip install 'restaurant-pipeline[bigquery]')") from None
            return None
        if self.settings.storage_endpoint:
            import grpc

            channel = grpc.insecure_channel(self.settings.storage_endpoint,
                                            options=[*_UNCAPPED_MESSAGES, *_FIXED_WINDOW])
            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        if self.settings.endpoint:
            raise SourceConfigError("PIPELINE_BIGQUERY_ENDPOINT is set but PIPELINE_BIGQUERY_STORAGE_ENDPOINT is "
                                    "not: set it (host:port of the emulator's gRPC port), or read_api=rest")

        def secure_channel(*args, options=(), **kwargs):  # the transport's own channel, and a fixed window
            return BigQueryReadGrpcTransport.create_channel(*args, options=[*options, *_FIXED_WINDOW], **kwargs)

        return BigQueryReadClient(credentials=self.credentials(),
                                  transport=functools.partial(BigQueryReadGrpcTransport, channel=secure_channel))

    def retry(self):
        """The client's retry of transient errors, for at most three request timeouts."""
        from google.cloud.bigquery import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.settings.timeout_s * 3)


def _large_buffers_returned_at_once() -> None:
    """Keep glibc's mmap threshold at 1 MiB. By default it rises (up to 32 MiB) each time a large
    buffer is freed, so the Storage API's multi-MB messages then come from the heap, which fragments:
    peak RSS then creeps up with every message; with the fixed threshold it stays flat. Process-wide,
    and a no-op off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
