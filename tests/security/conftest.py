"""The serving tests' deployments (support/serving_fixtures.py, loaded by the root conftest) are used here too."""
