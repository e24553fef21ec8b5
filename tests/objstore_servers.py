"""Real local object stores for the S3 and GCS tests.

- S3: moto's standalone server (`ThreadedMotoServer`) on 127.0.0.1, random port, spoken
  to by real boto3 through prefect-aws `AwsCredentials`.
- GCS: `gcp-storage-emulator` on 127.0.0.1, random port, spoken to by the real
  google-cloud-storage client that prefect-gcp `GcpCredentials` builds. How that client
  reaches the emulator (the narrowest seam we found, no network beyond 127.0.0.1):
  `STORAGE_EMULATOR_HOST` (the storage client's own switch) points it at the emulator, and
  `GOOGLE_APPLICATION_CREDENTIALS` names an `authorized_user` file holding an access token
  that is valid until 2099, so `GcpCredentials()` -> `google.auth.default()` yields real
  user credentials that never need a refresh. A service-account key was not used: with
  google-auth 2.62 it starts a Regional Access Boundary lookup to
  iamcredentials.googleapis.com, i.e. traffic off this machine; authorized_user files
  always refresh against oauth2.googleapis.com, hence the pre-issued token.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import server_missing

GCS_PROJECT = "test-project"
ACCESS_TOKEN = "ya29.test-access-token-not-a-secret-elsewhere"


# ----------------------------------------------------------------------------- S3 (moto)
@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 (and IAM) server on 127.0.0.1, stopped at the end."""
    try:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
    except Exception as exc:
        server_missing("moto S3 server", f"{type(exc).__name__}: {exc}")
    yield f"http://{host}:{port}"
    server.stop()


def aws_credentials(endpoint: str | None, key: str = "testing", secret: str = "testing-secret"):
    """prefect-aws credentials aimed at the moto server through AwsClientParameters."""
    from prefect_aws import AwsClientParameters, AwsCredentials

    return AwsCredentials(
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
    )


@pytest.fixture
def s3_bucket(moto_endpoint: str):
    """(boto3 client, fresh bucket name) on the moto server."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
    )
    name = f"b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name


# ----------------------------------------------------------------------------- GCS (emulator)
@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """URL of a gcp-storage-emulator on 127.0.0.1 (in memory), stopped at the end: its
    threads are not daemons, so a missing stop() would hang the test process."""
    try:
        from gcp_storage_emulator.server import create_server

        server = create_server("127.0.0.1", 0, in_memory=True)
        server.start()
        # the emulator has no public accessor for the port it bound (port 0)
        port = server._api._httpd.server_address[1]
    except Exception as exc:
        server_missing("gcp-storage-emulator", f"{type(exc).__name__}: {exc}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def gcp_env(gcs_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point google-cloud-storage at the emulator with ADC holding a pre-issued token."""
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "test-client.apps.googleusercontent.com",
                "client_secret": "test-client-secret",
                "refresh_token": "test-refresh-token",
                "token": ACCESS_TOKEN,
                "expiry": "2099-01-01T00:00:00Z",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", GCS_PROJECT)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    return gcs_emulator


def gcp_credentials():
    from prefect_gcp import GcpCredentials

    return GcpCredentials(project=GCS_PROJECT)


@pytest.fixture
def gcs_bucket(gcp_env: str):
    """(storage client, fresh bucket name) on the emulator."""
    client = gcp_credentials().get_cloud_storage_client()
    name = f"b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return client, name


class _Rejecting(BaseHTTPRequestHandler):
    """Answers every request as GCS answers a token whose account has no access (403).

    Not 401: on a 401 google-auth refreshes the token and retries, and refreshing user
    credentials goes to oauth2.googleapis.com, i.e. off this machine.
    """

    def _reject(self) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": 403,
                    "message": "ingest@test-project.iam.gserviceaccount.com does not have "
                    "storage.objects.list access to the Google Cloud Storage bucket.",
                    "errors": [{"reason": "forbidden", "message": "Forbidden"}],
                }
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = _reject

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gcs_rejecting_endpoint() -> Iterator[str]:
    """A 127.0.0.1 endpoint that refuses every request the way GCS refuses a credential
    without access to the bucket (403).

    The emulator accepts any token, so a rejected credential cannot be produced against
    it; this stands in for GCS only in the bad-credentials test.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rejecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
