"""Test support shared by every test directory (unit, component, e2e): bounded waits on a
condition instead of sleeps, waiting for a server until it accepts, and the leaked-task
check. On the import path through pytest's `pythonpath` setting (pyproject.toml)."""
