"""dify_pipeline: daily LLM enrichment of business records through a Dify app, as a Dagster code location."""
