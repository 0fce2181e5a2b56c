"""Test helpers too long for tests/conftest.py, which re-exports them: import them from `tests.conftest`."""
