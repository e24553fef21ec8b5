"""Object stores: `s3.S3Source` (prefect-aws) and `gcs.GcsSource` (prefect-gcp) on a shared
base (`base`). Nothing is imported here, so the `aws` extra alone runs S3 and `gcp` alone GCS."""
