"""The `dg` project layout's defs folder (`[tool.dg.project]` in pyproject.toml): `dg check defs` validates the
`defs.yaml` files under it (dagster-dg 1.13.0 requires the folder). The package declares none: its code location is
`dify_pipeline.definitions`; a project of one's own declares its enrichments as `dify_pipeline.DifyEnrichment`
components in its own defs folder."""
