"""Reports from a results dict: a rich terminal table, and report.md with PNG plots."""
