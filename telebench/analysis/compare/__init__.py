"""`telebench compare`: regression checks between two result files, with exit codes for CI.

Reads telebench results files (docs/results-schema.md) or pytest-benchmark JSON files, matches their
rows, and gives each metric a verdict (improved, regressed, unchanged, noisy) under `--fail-on` rules.
"""
