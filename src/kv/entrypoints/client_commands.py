"""`kv get|put|create|delete|list|watch|txn`: the store from the shell, through kv.client.

Exit status: 0 done; 1 the store's rules refused it (a missing key, an existing one, another
revision: 404, 409, 412; a failed transaction); 2 anything else: a usage error, no answer
from the server (refused, unresolvable, timed out), 400, 401, 413, 503, or an answer kv does
not give. The reason is on stderr, results on stdout.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

from kv.client import Client, KVError, Rejected
from kv.client.errors import ConnectionFailed, TimedOut, Unauthorized
from kv.client.model import JSONValue, Record
from kv.client.transport import DEFAULT_TIMEOUT
from kv.client.urls import DEFAULT_URL, URL_VARIABLE

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2
COMMANDS = ("get", "put", "create", "delete", "list", "watch", "txn")


class UsageError(Exception):
    """The command line is wrong in a way argparse cannot see (a VALUE that is not JSON)."""


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the client's subcommands to `kv`'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help=f"the server (default ${URL_VARIABLE}, else {DEFAULT_URL}); "
        "a path prefix is kept (https://host/kv-api)",
    )  # fmt: skip
    common.add_argument(
        "--json", action="store_true", help="print JSON for scripts: one object a line"
    )
    common.add_argument(
        "--timeout", type=_positive, default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
    epilog = (
        "Exit status: 0 done, 1 refused by the store's rules (404, 409, 412, a failed "
        "transaction), 2 usage, connection or any other error. KV_AUTH_TOKEN is sent as "
        "a bearer token when set."
    )

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[common], help=text, description=text, epilog=epilog
        )

    get = add("get", "print a key's value (JSON)")
    get.add_argument("key")
    value_help = "a JSON value (quote a string: '\"word\"'), or - to read it from stdin"
    for name, text in (("put", "overwrite a key (or create it with --create)"),
                       ("create", "create a key (refused when it exists)")):  # fmt: skip
        write = add(name, text)
        write.add_argument("key")
        write.add_argument("value", help=value_help)
        if name == "put":
            write.add_argument("--create", action="store_true", help="create; refused if present")
            write.add_argument("--if-revision", type=_whole, help="only at this revision")
        write.add_argument("--ttl", type=_positive, help="seconds until the key expires")
    delete = add("delete", "delete a key")
    delete.add_argument("key")
    delete.add_argument("--if-revision", type=_whole, help="only at this revision")
    listing = add("list", "list the keys under a prefix, in order")
    listing.add_argument("prefix", nargs="?", default="")
    listing.add_argument("--values", action="store_true", help="print the values too")
    listing.add_argument("--limit", type=_whole, help="print at most this many keys")
    watch = add("watch", "print every change under a prefix (or to --key) until Ctrl-C")
    watch.add_argument("prefix", nargs="?", help='the prefix ("" for every key)')
    watch.add_argument("--key", help="watch this one key instead of a prefix")
    watch.add_argument(
        "--initial", action="store_true", help="start with a put for every present key"
    )
    txn = add("txn", 'apply {"ops": [...]} from a file (or - for stdin): all or nothing')
    txn.add_argument("file")


def run(args: argparse.Namespace, *, stdin: TextIO | None = None) -> int:
    """Run the client command in `args`; its exit status."""
    out, err = sys.stdout, sys.stderr
    stdin = sys.stdin if stdin is None else stdin
    url = args.url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    try:
        client = Client(url, timeout=args.timeout)
    except ValueError as exc:  # a URL that is not one
        print(f"kv {args.command}: {exc}", file=err)
        return EXIT_ERROR
    try:
        with client:
            _COMMANDS[args.command](client, args, Output(out, as_json=args.json), stdin)
    except UsageError as exc:
        print(f"kv {args.command}: {exc}", file=err)
        return EXIT_ERROR
    except KVError as error:
        print(f"kv {args.command}: {describe(error, url)}", file=err)
        return EXIT_REFUSED if isinstance(error, Rejected) else EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "watch" else 130
    except BrokenPipeError:
        # The reader left (`kv watch ... | head`): nothing more to say, to anyone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK
    return EXIT_OK


def describe(error: KVError, url: str) -> str:
    if isinstance(error, TimedOut):
        return f"{url} gave no answer in time ({error.detail})"
    if isinstance(error, ConnectionFailed):
        return f"cannot reach {url}: {error.detail}"
    if isinstance(error, Unauthorized):
        return f"{error.detail} (set KV_AUTH_TOKEN to the server's token)"
    status = f"{error.status}: " if error.status is not None else ""
    return f"{status}{error.detail}"


class Output:
    """Results on stdout: JSON lines with --json; else readable, values as JSON (indented
    on a terminal)."""

    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.indent = 2 if out.isatty() else None

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def json(self, data: Any, *, pretty: bool = False) -> None:
        indent = self.indent if pretty and not self.as_json else None
        separators = None if indent else (",", ":")
        self.line(json.dumps(data, ensure_ascii=False, indent=indent, separators=separators))

    def record(self, record: Record, verb: str) -> None:
        if self.as_json:
            self.json(record.as_json())
            return
        expiry = record.as_json().get("expires_at")
        until = f", expires {expiry}" if expiry else ""
        self.line(f"{verb} {record.key} (revision {record.revision}{until})")


# --- the commands -------------------------------------------------------------------------

Command = Callable[[Client, argparse.Namespace, Output, TextIO], None]


def get(client: Client, args: argparse.Namespace, out: Output, _: TextIO) -> None:
    record = client.get(args.key)
    out.json(record.as_json() if out.as_json else record.value, pretty=True)


def put(client: Client, args: argparse.Namespace, out: Output, stdin: TextIO) -> None:
    value = parse_value(args.value, stdin)
    if args.command == "create" or args.create:
        if getattr(args, "if_revision", None) is not None:
            raise UsageError("--create and --if-revision do not go together")
        out.record(client.create(args.key, value, ttl=args.ttl), "created")
    else:
        out.record(client.put(args.key, value, if_revision=args.if_revision, ttl=args.ttl), "put")


def delete(client: Client, args: argparse.Namespace, out: Output, _: TextIO) -> None:
    deleted = client.delete(args.key, if_revision=args.if_revision)
    if out.as_json:
        out.json(deleted.as_json())
    else:
        out.line(f"deleted {deleted.key} (revision {deleted.revision})")


def list_keys(client: Client, args: argparse.Namespace, out: Output, _: TextIO) -> None:
    items = client.list(args.prefix, values=args.values, page_size=1000, limit=args.limit)
    for item in items:
        if out.as_json:
            out.json(item.as_json())
        elif isinstance(item, Record):
            value = json.dumps(item.value, ensure_ascii=False, separators=(",", ":"))
            out.line(f"{item.key}\t{item.revision}\t{value}")
        else:
            out.line(f"{item.key}\t{item.revision}")


def watch(client: Client, args: argparse.Namespace, out: Output, _: TextIO) -> None:
    if (args.prefix is None) == (args.key is None):
        raise UsageError('give a PREFIX ("" for every key) or --key KEY, not both')
    with client.watch(args.prefix, key=args.key, initial=args.initial) as events:
        for event in events:
            out.json(event.as_json())


def txn(client: Client, args: argparse.Namespace, out: Output, stdin: TextIO) -> None:
    text = stdin.read() if args.file == "-" else _read(args.file)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{args.file} is not JSON: {exc}") from None
    ops = data.get("ops") if isinstance(data, dict) else data
    if not isinstance(ops, list):
        raise UsageError(f'{args.file} must hold {{"ops": [...]}} or a list of operations')
    results = client.txn(ops)
    body = {"results": [None if r is None else r.as_json() for r in results]}
    out.json(body, pretty=True)


_COMMANDS: dict[str, Command] = {
    "get": get, "put": put, "create": put, "delete": delete, "list": list_keys,
    "watch": watch, "txn": txn,
}  # fmt: skip


# --- arguments ----------------------------------------------------------------------------


def parse_value(text: str, stdin: TextIO) -> JSONValue:
    """VALUE as JSON (`-`: stdin's). A bare word is refused with how to quote it."""
    if text == "-":
        text = stdin.read()
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        message = f"VALUE must be JSON ({exc})"
        word = text.strip()
        if word and word[0] not in '{["':
            quoted = json.dumps(word, ensure_ascii=False)
            message += f"; to store the string {word!r}, quote it: '{quoted}'"
        raise UsageError(message) from None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def _positive(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return seconds


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1")
    return int(text)
