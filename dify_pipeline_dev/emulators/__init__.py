"""HTTP emulators of Dify's Service API and of Elasticsearch, for tests and the demo (loopback only)."""
