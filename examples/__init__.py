"""Runnable examples: examples/train.py and the named setups it trains."""
