"""A minimal Bloom plugin for mii-core (a test fixture: ALiBi from outside the core tree)."""
