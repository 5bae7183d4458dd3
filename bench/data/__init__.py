"""Dataset readers (real on-disk formats) and the synthetic dataset."""
