"""Data: the built-in generator, real-data adapters and caches, splits and the training streams."""
