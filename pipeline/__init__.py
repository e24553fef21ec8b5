"""The pipeline engine every source flow runs: discover, dedupe against the ledger, land,
hand off, record (`engine`); `source_flow` builds a Prefect flow for a source block;
`summary` is the per-run counts and artifact; `block_loading` loads named blocks with
errors that name the parameter."""
