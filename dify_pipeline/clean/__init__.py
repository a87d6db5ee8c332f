"""Step 2 of the flow: normalize text, mask personal data, de-duplicate and quarantine (pure functions)."""
