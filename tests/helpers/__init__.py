"""Test helpers: stand-in models and synthetic data (not part of the library)."""
