"""What a failed Redis call becomes: StorageUnavailable, with the failure named."""

from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kv.domain.errors import Failure, StorageUnavailable

# What a call can raise when Redis is down, slow or refuses: redis-py's errors, the cluster
# client's own (not RedisErrors), OS errors it lets through, and our TimeoutError (an OSError).
FAILURES = (RedisError, RedisClusterException, OSError)


def unavailable(exc: BaseException, key: str | None, *, write: bool) -> StorageUnavailable:
    """The StorageUnavailable that a Redis failure `exc` of a call on `key` becomes."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        failure = Failure.TIMEOUT
    elif isinstance(exc, ResponseError):
        failure = Failure.REFUSED
    else:
        failure = Failure.UNREACHABLE
    error = StorageUnavailable("redis", failure, outcome_unknown=write, key=key)
    error.__cause__ = exc  # what `raise error from exc` does, for errors handed to a future
    return error
