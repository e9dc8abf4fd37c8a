"""The serving tests' deployments are in support/serving_fixtures.py (shared with tests/security)."""
