"""Temporary: tests/test_config.py still imports `data_overrides` from here. Its home is tests/helpers/data_files.py
(re-exported by tests/conftest.py); delete this file once test_config.py imports it from tests.conftest."""

from tests.conftest import data_overrides

__all__ = ["data_overrides"]
