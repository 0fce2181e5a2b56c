"""End-to-end tests: the real CLI (`python -m trainer`) or a script in a subprocess; all marked `e2e`."""
