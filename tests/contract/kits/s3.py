"""Contract kit: S3 (moto server)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from blocks.core.source import SourceBlock
from tests.contract.kits.base import KEY_UNSAFE, SourceKit, file_items, register, uid


@register
class S3Kit(SourceKit):
    name = "s3"
    no_unsafe_names = None

    def start(self) -> None:
        import boto3

        self.endpoint = self.request.getfixturevalue("moto_endpoint")
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing-secret",
        )
        self.bucket = f"c-{uid()}"
        self.client.create_bucket(Bucket=self.bucket)

    def block(self, **overrides: Any) -> SourceBlock:
        from blocks import S3Source
        from tests.objstore_servers import aws_credentials

        fields = dict(
            source_id=self.source_id,
            aws_credentials=aws_credentials(self.endpoint),
            bucket=self.bucket,
            retries=0,
            retry_delay_seconds=0,
        )
        return S3Source(**{**fields, **overrides})

    def put(self, n: int) -> dict[str, bytes]:
        items = file_items(n, uid())
        for name, data in items.items():
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data)
        return items

    def put_unsafe(self) -> list[str]:
        for name in KEY_UNSAFE:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=b"evil\n")
        return list(KEY_UNSAFE)

    def bad_config(self) -> tuple[SourceBlock, str]:
        return self.block(endpoint_url="ftp://127.0.0.1:1"), "S3Source.endpoint_url"

    def server_port(self) -> int | None:
        return urlsplit(self.endpoint).port

    def good_secret(self) -> str:
        return "testing-secret"  # tests.objstore_servers.aws_credentials' default

    def _moto_auth(self, count: str) -> None:
        """moto's IAM authentication is a process-wide switch ('0': from now on every
        request is checked; 'inf': never)."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    def wrong_secret(self) -> tuple[SourceBlock, str]:
        from tests.objstore_servers import aws_credentials

        secret = f"wrong-s3-secret-{uid()}"
        self._moto_auth("0")
        self.request.addfinalizer(lambda: self._moto_auth("inf"))
        creds = aws_credentials(self.endpoint, "AKIAUNKNOWNKEY000000", secret)
        return self.block(aws_credentials=creds), secret
