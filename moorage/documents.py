"""Reading the documents users write: the config file, tag policies, validation rules, Docker
config files, htpasswd files.

A document's shape is described by dataclasses with type hints, and ``read`` walks the
description and the document together. Whatever does not fit is reported as one
``DocumentError``: which document (its source), which key (its full path, such as
``storage.s3.endpoint`` or ``rules: rule 'prod': tags[0]``) and what is wrong with it.

Types: ``str``, ``int``, ``float`` (an integer is accepted), ``bool``, ``Path`` (from a
string), ``Literal[...]``, ``tuple[X, ...]`` and ``list[X]``, ``dict[str, X]``, ``X | None``,
``Any`` (taken as it is) and nested dataclasses (tables/objects). ``Annotated[X, ...]`` adds
checks for what a type cannot say (ranges, patterns): callables that raise ``Invalid``;
``ONE_OR_MORE`` lets a single item stand for a list of one, and ``SECRET`` keeps the value
out of messages. A dataclass may define
``verify(self)`` for rules across its fields: it raises ``Invalid`` naming the key at fault.

Keys are the field names (``field(metadata=key("credsStore"))`` spells another); keys the
description does not know are refused, unless the class sets ``IGNORE_UNKNOWN_KEYS``; a
missing key without a default is refused (``field(metadata=hint(...))`` says what to write).
Items of a list of tables whose class sets ``ITEM_LABEL`` are named by their ``name`` key
(``rule 'prod'``) rather than their index.

Values from the environment are ``Text``: they are parsed into the field's type (numbers;
true/false, yes/no, on/off, 1/0; JSON for lists and tables, or a comma-separated list of
strings), and an empty one leaves an optional setting unset.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, cast, get_args, get_origin
from typing import get_type_hints as _get_type_hints

T = TypeVar("T")

#: One step of a key's path: a table key, or the index of a list item.
Step = str | int
Where = tuple[Step, ...]


class DocumentError(ValueError):
    """Something a user wrote that cannot be used: in which document, at which key, and what
    is wrong (``str()`` joins them with ": ")."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(": ".join(part for part in (source, key, problem) if part))
        self.source = source
        self.key = key
        self.problem = problem


class Invalid(ValueError):
    """Raised by a check: the problem, and the key it concerns (``at``, relative to the
    checked value; none for the value itself)."""

    def __init__(self, problem: str, *at: Step) -> None:
        super().__init__(problem)
        self.problem = problem
        self.at = at


class Text(str):
    """A value written as text, such as an environment variable: read as the field's type."""


class Label(str):
    """A list item shown by its name (``rule 'prod'``) in a key's path, instead of its index."""


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: In ``Annotated[tuple[X, ...], ONE_OR_MORE]``: a single X stands for a list of one.
ONE_OR_MORE = _Marker("ONE_OR_MORE")
#: In ``Annotated[X, SECRET]``: messages never show the value (passwords, DSNs).
SECRET = _Marker("SECRET")

_KEY = "moorage.documents.key"
_HINT = "moorage.documents.hint"


def key(name: str) -> dict[str, str]:
    """Field metadata: the field's key in the document, when it is not the field's name."""
    return {_KEY: name}


def hint(text: str) -> dict[str, str]:
    """Field metadata: what to write, said when the (required) key is missing."""
    return {_HINT: text}


# -- checks for Annotated ------------------------------------------------------------------------


def non_empty(value: str | tuple[Any, ...] | list[Any]) -> None:
    if not value:
        raise Invalid("must not be empty")


def at_least(minimum: float) -> Callable[[float], None]:
    def check(value: float) -> None:
        if value < minimum:
            raise Invalid(f"must be at least {minimum}, not {value}")

    return check


def positive(value: float) -> None:
    if not value > 0:
        raise Invalid(f"must be more than 0, not {value}")


# -- parsing text -----------------------------------------------------------------------------


def parse_json(data: str | bytes, source: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise DocumentError(source, "", f"not valid JSON ({str(exc)[:200]})") from None


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DocumentError(source, "", f"not valid TOML ({exc})") from None


def read_text(path: Path, source: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DocumentError(source, "", f"cannot be read: {reason}") from None


# -- paths -----------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def render(where: Where) -> str:
    """A key's path as users read it: ``storage.s3.endpoint``, ``auths['r.example'].auth``,
    ``rules: rule 'prod': tags[0]``."""
    segments: list[str] = []
    current = ""
    for step in where:
        if isinstance(step, Label):
            segments += [current, step] if current else [step]
            current = ""
        elif isinstance(step, int):
            current += f"[{step}]"
        elif _IDENTIFIER.fullmatch(step):
            current += f".{step}" if current else step
        else:
            current += f"[{step!r}]"
    return ": ".join([*segments, current] if current else segments)


def located(source: str, error: Invalid, *where: Step) -> DocumentError:
    """The ``DocumentError`` for a check's ``Invalid`` about the value at ``where``."""
    return DocumentError(source, render((*where, *error.at)), error.problem)


# -- the reader -------------------------------------------------------------------------------


class _Failure(Exception):
    def __init__(self, where: Where, problem: str, unshown: str | None = None) -> None:
        self.where = where
        self.problem = problem
        #: The problem without the value, for secrets.
        self.unshown = unshown


def read(kind: type[T], value: object, source: str | Callable[[Where], str]) -> T:
    """``value`` read as ``kind``; ``DocumentError`` names ``source`` (or what it returns for
    the path of the key at fault), the key and the problem."""
    return cast(T, read_as(kind, value, source))


def read_as(kind: Any, value: object, source: str | Callable[[Where], str]) -> Any:
    """``read`` for any described type, such as ``tuple[Rule, ...]``."""
    try:
        return _read(kind, value, ())
    except _Failure as failure:
        name = source(failure.where) if callable(source) else source
        raise DocumentError(name, render(failure.where), failure.problem) from None


def _read(kind: Any, value: Any, where: Where) -> Any:
    checks: list[Callable[[Any], object]] = []
    one_or_more = secret = False
    if get_origin(kind) is Annotated:
        kind, *extras = get_args(kind)
        for extra in extras:
            if extra is ONE_OR_MORE:
                one_or_more = True
            elif extra is SECRET:
                secret = True
            else:
                checks.append(extra)
    try:
        result = _convert(kind, value, where, one_or_more)
    except _Failure as failure:
        if not secret:
            raise
        unshown = failure.unshown or "not a valid value"
        raise _Failure(failure.where, f"{unshown} (the value is secret: not shown)") from None
    for check in checks:
        try:
            check(result)
        except Invalid as exc:
            raise _Failure(where + exc.at, exc.problem) from None
    return result


def _convert(kind: Any, value: Any, where: Where, one_or_more: bool) -> Any:
    origin = get_origin(kind)
    if kind is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = [option for option in get_args(kind) if option is not type(None)]
        if len(options) != 1:
            raise TypeError(f"cannot read {kind}: only X | None unions are supported")
        if value is None or (isinstance(value, Text) and not value.strip()):
            return None
        return _read(options[0], value, where)
    if origin is Literal:
        return _literal(get_args(kind), value, where)
    if kind in _SCALARS:
        return _SCALARS[kind](value, where)
    if origin in (tuple, list):
        return _sequence(kind, value, where, one_or_more)
    if origin in (dict, Mapping):
        key_kind, item_kind = get_args(kind)
        if key_kind is not str:
            raise TypeError(f"cannot read {kind}: keys are strings")
        table = _table(value, where)
        return {name: _read(item_kind, item, (*where, name)) for name, item in table.items()}
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return _dataclass(kind, value, where)
    raise TypeError(f"cannot read {kind!r}")


def shown(value: object) -> str:
    """A value as a message shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = str(value)
        return repr(text if len(text) <= 80 else text[:77] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table/object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _wrong(where: Where, expected: str, value: object) -> _Failure:
    return _Failure(where, f"expected {expected}, not {shown(value)}", f"expected {expected}")


def _literal(options: tuple[Any, ...], value: Any, where: Where) -> Any:
    for option in options:
        same_kind = (
            isinstance(value, str) if isinstance(option, str) else type(value) is type(option)
        )
        if same_kind and value == option:
            return option
    names = [shown(option) for option in options]
    expected = " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
    raise _wrong(where, expected, value)


def _str(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise _wrong(where, "a string", value)
    return str(value)


def _bool(value: Any, where: Where) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Text):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise _wrong(where, "true or false", value)


def _int(value: Any, where: Where) -> int:
    if isinstance(value, Text):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _wrong(where, "an integer", value)


def _float(value: Any, where: Where) -> float:
    if isinstance(value, Text):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise _wrong(where, "a number", value)


def _path(value: Any, where: Where) -> Path:
    if isinstance(value, os.PathLike):
        return Path(value)
    if isinstance(value, str) and value:
        return Path(value)
    raise _wrong(where, "a path", value)


_SCALARS: dict[Any, Callable[[Any, Where], Any]] = {
    str: _str,
    bool: _bool,
    int: _int,
    float: _float,
    Path: _path,
}


def _json_text(value: Text, where: Where, expected: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        raise _wrong(where, f"{expected} (JSON)", value) from None


def _sequence(kind: Any, value: Any, where: Where, one_or_more: bool) -> Any:
    args = get_args(kind)
    if get_origin(kind) is tuple and (len(args) != 2 or args[1] is not Ellipsis):
        raise TypeError(f"cannot read {kind}: tuples are tuple[X, ...]")
    item_kind = args[0]
    if isinstance(value, Text):
        if value.lstrip().startswith("[") or _strip(item_kind) is not str:
            value = _json_text(value, where, "a list")
        else:
            value = [item.strip() for item in value.split(",") if item.strip()]
    if one_or_more and not isinstance(value, list | tuple):
        try:  # one item, written alone: a problem is the value's, not that of item [0]
            item = _read(item_kind, value, where)
        except _Failure as failure:
            if failure.where != where or failure.unshown is None:
                raise
            raise _wrong(where, f"{failure.unshown[len('expected ') :]} or a list", value) from None
        return (item,) if get_origin(kind) is tuple else [item]
    if not isinstance(value, list | tuple):
        raise _wrong(where, "a list", value)
    items = [
        _read(item_kind, item, (*where, _item_step(item_kind, item, index)))
        for index, item in enumerate(value)
    ]
    return tuple(items) if get_origin(kind) is tuple else items


def _strip(kind: Any) -> Any:
    """``kind`` without ``Annotated``."""
    return get_args(kind)[0] if get_origin(kind) is Annotated else kind


def _item_step(item_kind: Any, item: Any, index: int) -> Step:
    label = getattr(_strip(item_kind), "ITEM_LABEL", None)
    name = item.get("name") if isinstance(item, Mapping) else None
    if label is None or not isinstance(name, str) or not name.strip():
        return index
    return Label(f"{label} {name!r}")


def _table(value: Any, where: Where) -> Mapping[str, Any]:
    if isinstance(value, Text):
        value = _json_text(value, where, "a table/object")
    if not isinstance(value, Mapping):
        raise _wrong(where, "a table/object", value)
    return value


@cache
def _fields(kind: type) -> tuple[tuple[str, dataclasses.Field[Any], Any], ...]:
    """(key, field, type) of each field of a dataclass, type hints resolved."""
    hints = _get_type_hints(kind, include_extras=True)
    return tuple(
        (field.metadata.get(_KEY, field.name), field, hints[field.name])
        for field in dataclasses.fields(kind)
        if field.init
    )


def _dataclass(kind: type, value: Any, where: Where) -> Any:
    table = _table(value, where)
    fields = _fields(kind)
    known = [name for name, _, _ in fields]
    if not getattr(kind, "IGNORE_UNKNOWN_KEYS", False):
        for name in table:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                guess = f"; did you mean {close[0]!r}?" if close else ""
                listed = ", ".join(sorted(known))
                raise _Failure((*where, str(name)), f"unknown key{guess} (known: {listed})")
    values: dict[str, Any] = {}
    for name, field, field_kind in fields:
        if name in table:
            values[field.name] = _read(field_kind, table[name], (*where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            advice = field.metadata.get(_HINT)
            raise _Failure((*where, name), f"missing ({advice})" if advice else "missing")
    result = kind(**values)
    verify = getattr(result, "verify", None)
    if verify is not None:
        try:
            verify()
        except Invalid as exc:
            raise _Failure(where + exc.at, exc.problem) from None
    return result


def keys(kind: type, prefix: Where = ()) -> list[tuple[str, ...]]:
    """The path of every setting of a dataclass of sections: fields whose type is a dataclass
    are sections, and their fields settings in turn."""
    found: list[tuple[str, ...]] = []
    for name, _, field_kind in _fields(kind):
        inner = _strip(field_kind)
        path = (*prefix, name)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            found += keys(inner, path)
        else:
            found.append(cast(tuple[str, ...], path))
    return found
