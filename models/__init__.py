"""Model adapters: reference baselines and paper re-implementations."""
