"""Runnable examples: ``python -m pymodules.examples.digits``."""
