"""In-process unit tests (no subprocess, no real CLI run): `pytest -m "not e2e"` runs these alone."""
