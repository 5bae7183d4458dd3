"""medvlbench: an evaluation harness for medical vision-language models."""

__version__ = "0.1.0"
