"""The domain's error hierarchy. Every error carries the key it concerns (None when none does)."""


class KVError(Exception):
    """Base of every error the domain raises."""

    def __init__(self, key: str | None, detail: str) -> None:
        super().__init__(detail)
        self.key = key
        self.detail = detail


class InvalidInput(KVError):
    """A key or value breaks the store's rules."""


class InvalidKey(InvalidInput):
    pass


class InvalidValue(InvalidInput):
    pass


class KeyExists(KVError):
    def __init__(self, key: str) -> None:
        super().__init__(key, f"key {key!r} already exists")


class KeyNotFound(KVError):
    def __init__(self, key: str) -> None:
        super().__init__(key, f"key {key!r} does not exist")


class RevisionMismatch(KVError):
    def __init__(self, key: str, *, expected: int, actual: int) -> None:
        super().__init__(
            key, f"key {key!r} is at revision {actual}, the request expected revision {expected}"
        )
        self.expected = expected
        self.actual = actual


class StorageUnavailable(KVError):
    """The backend did not answer in time or could not be reached.

    For a write, the outcome is unknown: the write may or may not have been applied.
    """

    def __init__(
        self, detail: str = "the storage backend is unavailable", *, key: str | None = None
    ):
        super().__init__(key, detail)
