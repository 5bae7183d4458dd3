"""Reference baselines (small, trainable from scratch) used to validate the harness."""
