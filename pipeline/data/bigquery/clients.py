"""The clients a BigQuery source reads through: REST (google-cloud-bigquery) and, when installed,
the Storage Read API over gRPC. Built once each, on first use."""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.bigquery.errors import translated
from pipeline.data.sources import SourceConfigError
from pipeline.settings.bigquery import BigQuerySettings

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


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

            # As Google's own transport: no cap on a message (the server sizes them; one is in memory at a time).
            channel = grpc.insecure_channel(self.settings.storage_endpoint,
                                            options=[("grpc.max_send_message_length", -1),
                                                     ("grpc.max_receive_message_length", -1)])
            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
        if self.settings.endpoint:
            raise SourceConfigError("PIPELINE_BIGQUERY_ENDPOINT is set but PIPELINE_BIGQUERY_STORAGE_ENDPOINT is "
                                    "not: set it (host:port of the emulator's gRPC port), or read_api=rest")
        return BigQueryReadClient(credentials=self.credentials())

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
