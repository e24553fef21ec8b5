"""Warehouse queries exported to files: `snowflake.SnowflakeQuerySource`,
`bigquery.BigQueryQuerySource`, the shared query runner (`query`) and watermark (`watermark`)."""
