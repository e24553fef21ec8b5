"""The core every source shares: the source interface (`source`), errors and their
retryability (`errors`), the ledger of what was taken (`ledger`, `ledger_schema`), the
ingestion queue that lands items and tells consumers (`ingestion_queue`, `queue_consumer`),
and small helpers (names, time zones, date templates, file formats, events)."""
