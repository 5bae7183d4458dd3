"""Task adapters (one module per protocol) and the catalog of named task instances."""
