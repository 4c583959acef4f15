"""kubepresence benchmarks: run with `nox -s bench`."""
