"""The CLI's parts that need no server: VALUE parsing, and output on a terminal or not."""

import io

import pytest

from kv.client import Record
from kv.entrypoints.cli import build_parser
from kv.entrypoints.client_commands import Output, UsageError, parse_value


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("1.0", 1.0), ('"word"', "word"), ("null", None), ('{"a": [true]}', {"a": [True]})],
)
def test_values_are_json(text: str, value: object) -> None:
    assert parse_value(text, io.StringIO()) == value
    assert parse_value("-", io.StringIO(text + "\n")) == value


@pytest.mark.parametrize("text", ["word", "two words", "NaN", "Infinity", "{", "", "[1,]"])
def test_what_is_not_json_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="VALUE must be JSON") as refused:
        parse_value(text, io.StringIO())
    if text.strip() and text[0].isalpha():
        assert f"""quote it: '"{text}"'""" in str(refused.value)


def test_values_are_indented_on_a_terminal_and_compact_otherwise() -> None:
    for stream, expected in (
        (Terminal(), '{\n  "a": [\n    1\n  ]\n}\n'),
        (io.StringIO(), '{"a":[1]}\n'),
    ):
        Output(stream, as_json=False).json({"a": [1]}, pretty=True)
        assert stream.getvalue() == expected
    scripted = Terminal()
    Output(scripted, as_json=True).json({"a": [1]}, pretty=True)
    assert scripted.getvalue() == '{"a":[1]}\n'  # --json: one line, even on a terminal


def test_a_write_says_what_it_did() -> None:
    out = io.StringIO()
    Output(out, as_json=False).record(Record("k", 1, 2), "put")
    assert out.getvalue() == "put k (revision 2)\n"


@pytest.mark.parametrize(
    "argv",
    [["get"], ["put", "k"], ["delete", "k", "--if-revision", "0"], ["list", "--limit", "x"],
     ["get", "k", "--timeout", "-1"]],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage: kv" in capsys.readouterr().err
