"""Report tables held as columns: one row object per tensor is ~0.5-1 KB of pydantic model, and a large mixture of
experts has 10^5 tensors. A `PackedRows` subclass keeps its rows' values in arrays and makes each row model on access;
pydantic validates and writes it as the plain list of rows it stands for (the JSON and its schema are unchanged),
and a list of row models is accepted wherever one is."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, TypeVar, overload

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

RowT = TypeVar("RowT", bound=BaseModel)


class PackedRows(Sequence[RowT]):
    """A read-only sequence of `row_model` rows built from columns (`row(i)` makes one)."""

    __slots__ = ()
    row_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def row(self, i: int) -> RowT:
        """Row i (0 <= i < len) as its model."""

    @overload
    def __getitem__(self, i: int) -> RowT: ...
    @overload
    def __getitem__(self, i: slice) -> list[RowT]: ...
    def __getitem__(self, i: int | slice) -> RowT | list[RowT]:
        if isinstance(i, slice):
            return [self.row(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("row index out of range")
        return self.row(i)

    def __iter__(self) -> Iterator[RowT]:
        for i in range(len(self)):
            yield self.row(i)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same rows (a report read back from its JSON holds lists)."""
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the list it stands for

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """Validated and written as a list of `row_model` (the JSON schema is that list's): a packed table is taken
        as it is, a list is validated into a list."""
        as_list = handler.generate_schema(list[cls.row_model])  # type: ignore[name-defined]
        return core_schema.json_or_python_schema(
            json_schema=as_list,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), as_list]),
            serialization=core_schema.plain_serializer_function_ser_schema(list, return_schema=as_list),
        )


def json_chunks(model: BaseModel, fields: Sequence[str], indent: int | None = None) -> Iterator[str]:
    """`model.model_dump_json(indent=indent)` in pieces: the items of the named top-level list fields (in the
    model's field order) one at a time, spliced into pydantic's own text of the rest, so that neither every row model
    nor the whole text is held (a manifest or a detect report of 10^5 tensors). The same bytes."""
    shell = model.model_copy(update={f: [] for f in fields}).model_dump_json(indent=indent)
    # A top-level key: with an indent it starts a line at the first level; a quote inside a JSON string is escaped.
    key = "{}" if indent is None else "\n" + " " * indent + "{}"
    pad = "" if indent is None else "\n" + " " * (2 * indent)  # items sit two levels deep
    at = 0
    for field in fields:
        marker = key.format(f'"{field}":[]' if indent is None else f'"{field}": []')
        cut = shell.index(marker, at) + len(marker) - 1  # just before the closing bracket
        yield shell[at:cut]
        items: Sequence[BaseModel] = getattr(model, field)
        for k, item in enumerate(items):
            yield ("," if k else "") + pad + item.model_dump_json(indent=indent).replace("\n", pad)
        yield ("" if indent is None or not items else "\n" + " " * indent) + "]"
        at = cut + 1
    yield shell[at:]


__all__ = ["PackedRows", "RowT", "json_chunks"]
