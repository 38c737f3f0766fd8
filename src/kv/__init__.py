"""kv: a key-value store served over HTTP."""

__version__ = "0.1.0"
