"""Issue 19's targets, as the report checks them."""

THROUGHPUT_TARGETS = {"memory": 1.0, "tarantool": 0.85, "redis": 0.75}  # kv ÷ Starlette floor
RAW_TARGET = 0.6  # memory: kv ÷ raw-ASGI floor
P99_FACTOR = 1.5  # kv's p99 ÷ the Starlette floor's, at saturation and at the fixed rate
TARGETED = ("GET existing", "PUT overwrite", "POST new keys")
WATCHER_COST = 0.10  # of PUT throughput, with 10 watchers
LISTING_MS = 2.0  # a 100-key page inside the app, memory
RSS_PER_KEY = 300  # bytes, memory, 1M keys
