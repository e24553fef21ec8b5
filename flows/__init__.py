"""Prefect flows that deployments name: one module per source (built by
`pipeline.source_flow`), plus `backfill` and `health`. The engine lives in `pipeline/`, the
operator tools (CLI, webhook receiver, automations) in `ops/`."""
