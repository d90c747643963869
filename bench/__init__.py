"""Benchmarks run by ``make bench``: results printed as a table and written to var/bench/."""
