"""Reproducible performance runs (not tests). A regular package on purpose: pysbd installs a
top-level `benchmarks` package too, and only a regular package in the working directory wins."""
