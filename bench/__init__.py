"""Benchmarks. Not part of the installed package; run them from a checkout (see `make bench`)."""
