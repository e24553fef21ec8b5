"""Operator tools: the `ingest-ops` CLI (`cli`), the signed webhook receiver
(`webhook_receiver`), the Prefect automations it installs (`automations`) and the quick-start
demo (`demo`)."""
