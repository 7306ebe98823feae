"""moorage.documents: reading a typed description, and the errors it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest

from moorage.api.auth import load_htpasswd
from moorage.documents import (
    ONE_OR_MORE,
    SECRET,
    DocumentError,
    Invalid,
    Text,
    at_least,
    hint,
    key,
    parse_json,
    parse_toml,
    read,
    read_as,
)


@dataclass(frozen=True)
class Item:
    ITEM_LABEL: ClassVar[str] = "item"

    name: str
    size: Annotated[int, at_least(1)] = 1


@dataclass(frozen=True)
class Inner:
    path: Path | None = None
    ratio: float = 0.5


@dataclass(frozen=True)
class Open:
    IGNORE_UNKNOWN_KEYS: ClassVar[bool] = True

    seen: bool = False


@dataclass(frozen=True)
class Document:
    mode: Literal["a", "b", "c"]
    tags: Annotated[tuple[str, ...], ONE_OR_MORE] = ()
    items: tuple[Item, ...] = ()
    table: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    open: Open = field(default_factory=Open)
    password: Annotated[str, SECRET] | None = None
    camel: str = field(default="", metadata=key("camelCase"))
    needed: str | None = field(default=None, metadata=hint("write it"))

    def verify(self) -> None:
        if self.mode == "c" and not self.tags:
            raise Invalid("missing (mode c needs tags)", "tags")


def error(value: Any) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        read(Document, value, "doc")
    assert str(caught.value) == ": ".join(
        p for p in (caught.value.source, caught.value.key, caught.value.problem) if p
    )
    return caught.value


def test_a_document_is_read_into_its_description() -> None:
    document = read(
        Document,
        {
            "mode": "b",
            "tags": "one",
            "items": [{"name": "x", "size": 3}],
            "table": {"k.1": 2},
            "inner": {"path": "/p", "ratio": 1},
            "open": {"seen": True, "anything": [1]},
            "camelCase": "spelled",
        },
        "doc",
    )
    assert document == Document(
        mode="b",
        tags=("one",),
        items=(Item("x", 3),),
        table={"k.1": 2},
        inner=Inner(Path("/p"), 1.0),
        open=Open(True),
        camel="spelled",
    )
    assert read(Document, {"mode": "a", "tags": ["p", "q"]}, "doc").tags == ("p", "q")


@pytest.mark.parametrize(
    ("value", "key", "problem"),
    [
        ([], "", "expected a table/object, not a list"),
        ({}, "mode", "missing"),
        ({"mode": "d"}, "mode", "expected one of 'a', 'b', 'c', not 'd'"),
        ({"mode": "a", "mdoe": 1}, "mdoe", "unknown key; did you mean 'mode'? (known: "),
        ({"mode": "a", "tags": 3}, "tags", "expected a string or a list, not 3"),
        ({"mode": "a", "tags": ["x", None]}, "tags[1]", "expected a string, not null"),
        ({"mode": "c"}, "tags", "missing (mode c needs tags)"),
        ({"mode": "a", "items": [{"name": "x", "size": 0}]}, "items: item 'x': size", "must be"),
        ({"mode": "a", "items": [{"size": 2}]}, "items[0].name", "missing"),
        ({"mode": "a", "items": [{"name": "x", "size": True}]}, "items: item 'x': size", "exp"),
        ({"mode": "a", "table": {"k.1": "2"}}, "table['k.1']", "expected an integer, not '2'"),
        ({"mode": "a", "inner": {"path": ""}}, "inner.path", "expected a path, not ''"),
        ({"mode": "a", "inner": {"ratio": "1"}}, "inner.ratio", "expected a number, not '1'"),
        ({"mode": "a", "password": 12345}, "password", "expected a string (the value is secret"),
        ({"mode": "a", "needed": None, "camel": "x"}, "camel", "unknown key; did you mean 'cam"),
    ],
)
def test_errors_name_the_key_and_the_problem(value: Any, key: str, problem: str) -> None:
    found = error(value)
    assert (found.source, found.key) == ("doc", key)
    assert found.problem.startswith(problem), found.problem
    assert "12345" not in str(found)


def test_a_missing_key_says_what_to_write() -> None:
    @dataclass(frozen=True)
    class Needs:
        needed: str = field(metadata=hint("write it"))

    with pytest.raises(DocumentError, match=r"^doc: needed: missing \(write it\)$"):
        read(Needs, {}, "doc")


def test_text_is_parsed_as_the_type() -> None:
    document = read(
        Document,
        {
            "mode": Text("a"),
            "tags": Text(" x, y ,,"),
            "items": Text('[{"name": "i"}]'),
            "inner": {"path": Text(""), "ratio": Text("0.25")},
            "open": {"seen": Text("ON")},
        },
        "env",
    )
    assert document.tags == ("x", "y")
    assert document.items == (Item("i"),)
    assert document.inner == Inner(None, 0.25)
    assert document.open.seen is True
    with pytest.raises(DocumentError, match=r"^env: inner.ratio: expected a number, not 'nan'$"):
        read(Document, {"mode": "a", "inner": {"ratio": Text("nan")}}, "env")
    with pytest.raises(DocumentError, match=r"items: expected a list \(JSON\), not '\[\{'"):
        read(Document, {"mode": "a", "items": Text("[{")}, "env")


def test_the_source_may_depend_on_the_key() -> None:
    def source(where: tuple[str | int, ...]) -> str:
        return "from the table" if where[:1] == ("table",) else "elsewhere"

    with pytest.raises(DocumentError, match=r"^from the table: table.x: expected an integer"):
        read(Document, {"mode": "a", "table": {"x": "y"}}, source)


def test_lists_and_parsing() -> None:
    assert read_as(tuple[Item, ...], [{"name": "a"}], "items") == (Item("a"),)
    with pytest.raises(DocumentError, match=r"^items: \[0\]: expected a table/object, not 1$"):
        read_as(tuple[Item, ...], [1], "items")
    with pytest.raises(DocumentError, match=r"^x.json: not valid JSON \("):
        parse_json(b"{", "x.json")
    with pytest.raises(DocumentError, match=r"^x.toml: not valid TOML \("):
        parse_toml("a = ", "x.toml")


def test_htpasswd_files(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("# users\n\nalice:$2b$04$abc\n")
    assert load_htpasswd(path) == {"alice": b"$2b$04$abc"}
    for text, line, problem in (
        ("alice:$2b$04$abc\nbob\n", 2, "expected user:hash"),
        (":$2b$04$abc\n", 1, "expected user:hash"),
        ("bob:{SHA}abc\n", 1, "only bcrypt hashes are supported (htpasswd -B)"),
    ):
        path.write_text(text)
        with pytest.raises(DocumentError) as caught:
            load_htpasswd(path)
        found = caught.value
        assert (found.source, found.key, found.problem) == (
            f"htpasswd file {path}",
            f"line {line}",
            problem,
        )
