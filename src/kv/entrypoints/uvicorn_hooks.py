"""The private members of uvicorn that kv.entrypoints.protocol extends, and their check.

uvicorn has no public API for a protocol's deadlines and limits, so GuardedHttpToolsProtocol
extends uvicorn's HttpToolsProtocol through the members below, read from the uvicorn version
pyproject.toml pins. `check_uvicorn` verifies each one (a method with its parameters, an
attribute still assigned by the method that sets it) when `kv serve` builds the protocol
factory, so another uvicorn stops start-up with a message rather than misbehaving under load.
"""

import dis
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

# The uvicorn minor version whose private members this module hooks (pyproject.toml pins it).
# The uvicorn minor version whose private members this module hooks (pyproject.toml pins it).
PINNED_UVICORN = "0.54"
# What the class relies on in uvicorn beyond asyncio's Protocol interface, as read in
# uvicorn 0.54. Methods it overrides and calls, with their parameters after `self`:
HOOKED_METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "HttpToolsProtocol": {
        # how uvicorn's server builds the protocol (the contract of `http=` classes)
        "__init__": ("config", "server_state", "app_state", "_loop"),
        # stops uvicorn's keep-alive timer when data arrives (data_received is replaced, to
        # answer parse errors in problem+json)
        "_unset_keepalive_if_required": (),
        # httptools callbacks, extended to start and stop the deadlines
        "on_headers_complete": (),
        "on_message_complete": (),
        # called by a RequestResponseCycle when its response is sent
        "on_response_complete": (),
        # called by uvicorn's server on every connection when it shuts down
        "shutdown": (),
    },
}
# Attributes it reads or sets, with the uvicorn method that assigns them:
HOOKED_ATTRIBUTES: dict[str, dict[str, str]] = {
    "HttpToolsProtocol": {
        "app": "__init__",  # swapped for the 503 app over the concurrency limit
        "cycle": "__init__",  # the newest request's RequestResponseCycle
        "parser": "__init__",  # the httptools parser, fed by data_received
        # the head parsed so far: its size, Host lines, X-Request-ID, body framing
        "headers": "on_message_begin",
        "url": "on_message_begin",  # the request target: its size
    },
    "RequestResponseCycle": {
        # a streaming response's stop event (protocol.STOP_STREAM) is looked up in it
        "scope": "__init__",
        # whether a request is still owed (part of) its answer
        "response_started": "__init__",
        "response_complete": "__init__",
        # set to tell a handler the client is gone (what uvicorn does on connection_lost)
        "disconnected": "__init__",
        "keep_alive": "__init__",
        "message_event": "__init__",
        # reopened for the body of a request whose upgrade is declined
        "more_body": "__init__",
    },
    "ServerState": {
        # the open connections and running requests the concurrency limit counts
        "connections": "__init__",
        "tasks": "__init__",
    },
}
UVICORN_CLASSES: dict[str, type] = {
    "HttpToolsProtocol": HttpToolsProtocol,
    "RequestResponseCycle": RequestResponseCycle,
    "ServerState": ServerState,
}


class UnsupportedUvicorn(RuntimeError):
    """The installed uvicorn lacks a member this module hooks, or has it in another shape."""


def check_uvicorn(classes: Mapping[str, type], version: str) -> None:
    """Fail unless every hooked member of uvicorn exists with the shape this module expects."""
    missing = missing_hooks(classes)
    if missing:
        raise UnsupportedUvicorn(
            f"kv serve extends private members of uvicorn {PINNED_UVICORN}.x (README: "
            f"Pinned private hooks), and uvicorn {version} is installed: "
            + "; ".join(missing)
            + f". Install uvicorn {PINNED_UVICORN}.x (pip install -r requirements.lock)."
        )


def missing_hooks(classes: Mapping[str, type]) -> list[str]:
    """Each hooked member that `classes` lack or have in another shape, said in a sentence."""
    missing = []
    for owner, methods in HOOKED_METHODS.items():
        for name, parameters in methods.items():
            method = getattr(classes[owner], name, None)
            if not callable(method):
                missing.append(f"{owner}.{name}() is missing")
                continue
            try:
                found = tuple(inspect.signature(method).parameters)[1:]
            except (TypeError, ValueError):
                found = None
            if found != parameters:
                missing.append(
                    f"{owner}.{name}() takes ({', '.join(found or ('?',))}), "
                    f"not ({', '.join(parameters)})"
                )
    for owner, attributes in HOOKED_ATTRIBUTES.items():
        for name, assigner in attributes.items():
            if not _assigns(getattr(classes[owner], assigner, None), name):
                missing.append(f"{owner}.{name} is no longer set by {owner}.{assigner}()")
    return missing


def _assigns(method: Callable[..., Any] | None, attribute: str) -> bool:
    """Whether `method`'s code sets `attribute` on an object (`self.attribute = ...`)."""
    try:
        instructions = dis.get_instructions(method)  # type: ignore[arg-type]
    except TypeError:  # None, or not Python code
        return False
    return any(i.opname == "STORE_ATTR" and i.argval == attribute for i in instructions)
