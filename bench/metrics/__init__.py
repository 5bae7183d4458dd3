"""Pure metric functions (no model, no I/O), grouped by family."""
