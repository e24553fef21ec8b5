"""Runs the local-folder pipeline landing into a bucket, and hangs mid-upload (to be killed).

Usage: python tests/landing_bucket_subprocess.py LEDGER_URL LANDING_DIR SOURCE_DIR BUCKET_REF
       SIGNAL_FILE

S3 (`s3-bucket/...`): after the first part of a multipart upload is stored, it creates
SIGNAL_FILE and sleeps. GCS (`gcs-bucket/...`): after the staging object is uploaded,
before the rewrite to the final key. The test then kills it with SIGKILL.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow
from prefect_sqlalchemy import SqlAlchemyConnector

from blocks import IngestionQueue, Ledger, LocalFolderSource
from pipeline.engine import run_source


def hang_here(signal_file: str) -> None:
    Path(signal_file).touch()
    time.sleep(600)


def install_hang(bucket_ref: str, signal_file: str) -> None:
    if bucket_ref.startswith("s3-bucket/"):
        from blocks.object_store.landing_s3 import S3LandingStore

        original_init = S3LandingStore.__init__

        def init(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            upload_part = self._client.upload_part

            def first_part_then_hang(**kw):
                done = upload_part(**kw)
                hang_here(signal_file)
                return done

            self._client.upload_part = first_part_then_hang

        S3LandingStore.__init__ = init
    else:
        from google.cloud.storage import Blob

        def rewrite(self, *args, **kwargs):
            hang_here(signal_file)

        Blob.rewrite = rewrite


@flow(name="subprocess-bucket-ingest")
def subprocess_ingest(ledger_url: str, landing: str, source_dir: str, bucket_ref: str) -> dict:
    source = LocalFolderSource(source_id="killed", directory=source_dir)
    ledger = Ledger(database=SqlAlchemyConnector(connection_info=ledger_url))
    queue = IngestionQueue(landing_dir=landing, landing_bucket=bucket_ref, fsync=False)
    return run_source(source, ledger, queue).counts()


if __name__ == "__main__":
    url, landing, src, ref, signal_file = sys.argv[1:6]
    install_hang(ref, signal_file)
    print(subprocess_ingest(url, landing, src, ref))
