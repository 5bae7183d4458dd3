"""The result format: schema, read/write, comparison of results, per-run HTML reports."""
