"""Where a kv server is and how a key is written in its URLs."""

import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "KV_URL"
TOKEN_VARIABLE = "KV_AUTH_TOKEN"  # noqa: S105 (the name of the variable, not a token)

_UNRESERVED = "-._~"  # with letters and digits: the characters a URL never needs to encode


def encode_key(key: str) -> str:
    """A key as URL path text: `/` stays literal, everything but letters, digits and `-._~`
    is percent-encoded (UTF-8), so a space, `%`, `+`, `?` or `#` reaches the server as part
    of the key.

    Two exceptions keep the path from being rewritten on the way (by httpx, a proxy or a
    server, which remove `.` and `..` segments and may merge `//`): a segment that is `.` or
    `..` is sent as `%2E` or `%2E%2E`, and a `/` that would start an empty segment (a leading
    `/`, or a second `/` in a row) as `%2F`. The server decodes the whole path, so the key
    it reads is the key given.
    """
    segments: list[str] = []
    for segment in key.split("/"):
        if segments and segments[-1] in ("", "%2F"):
            # The previous "/" would have started an empty segment: encode it instead.
            segments[-1] = segments[-1] + "%2F" + _encode_segment(segment)
        else:
            segments.append(_encode_segment(segment))
    return "/".join(segments)


def _encode_segment(segment: str) -> str:
    if segment in (".", ".."):
        return "%2E" * len(segment)
    return quote(segment, safe=_UNRESERVED)


def query(**params: str | int | None) -> str:
    """A query string of the parameters that are not None, each fully percent-encoded (so a
    `+` or `/` in a prefix is not read as a space or kept as-is)."""
    pairs = [
        f"{name}={quote(str(value), safe=_UNRESERVED)}"
        for name, value in params.items()
        if value is not None
    ]
    return "?" + "&".join(pairs) if pairs else ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is: its origin and the path prefix it lives under (behind a proxy at
    `https://host/kv-api`, every request goes to `/kv-api/...`)."""

    origin: str
    path: str

    @classmethod
    def parse(cls, url: str | None = None) -> "Endpoint":
        """`url`, else `$KV_URL`, else http://127.0.0.1:8000; `http://` when no scheme."""
        url = url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
        if "://" not in url:
            url = f"http://{url}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r}: a base URL has no query or fragment")
        return cls(f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"))

    def url(self, target: str) -> str:
        return self.origin + self.path + target

    def __str__(self) -> str:
        return self.origin + self.path


def token_from(token: str | None) -> str | None:
    """The bearer token: the one given, else `$KV_AUTH_TOKEN`; "" means none."""
    if token is None:
        token = os.environ.get(TOKEN_VARIABLE)
    return token or None
