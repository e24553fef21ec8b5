"""Prefect flows of the ingestion product: one per source, plus the shared pipeline."""
