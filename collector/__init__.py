"""Host side: ingest, store, aggregation, web dashboard, terminal view and reports."""
