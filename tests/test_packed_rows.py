"""attest.packed_rows: tables held as columns behave as the list of row models they stand for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

import pytest
from pydantic import BaseModel

from attest.packed_rows import PackedRows


class Row(BaseModel):
    name: str
    value: float | None = None


class Rows(PackedRows[Row]):
    __slots__ = ("_names", "_values")
    row_model = Row

    def __init__(self, names: list[str], values: list[float | None]) -> None:
        self._names, self._values = names, values

    def __len__(self) -> int:
        return len(self._names)

    def row(self, i: int) -> Row:
        return Row(name=self._names[i], value=self._values[i])


class Table(BaseModel):
    rows: Annotated[Sequence[Row], Rows]


def test_sequence_protocol() -> None:
    rows = Rows(["a", "b", "c"], [1.0, None, 3.0])
    assert len(rows) == 3 and rows[0] == Row(name="a", value=1.0) and rows[-1].name == "c"
    assert [r.name for r in rows] == ["a", "b", "c"] and [r.name for r in rows[1:]] == ["b", "c"]
    assert rows == [Row(name="a", value=1.0), Row(name="b"), Row(name="c", value=3.0)]
    assert rows != [Row(name="a", value=1.0)] and rows != "abc"
    with pytest.raises(IndexError):
        rows[3]
    with pytest.raises(IndexError):
        rows[-4]
    assert repr(rows) == "Rows(3 rows)"


def test_json_and_schema_are_the_lists() -> None:
    packed = Table(rows=Rows(["a", "b"], [0.5, None]))
    plain = Table(rows=[Row(name="a", value=0.5), Row(name="b")])
    assert packed.model_dump_json() == plain.model_dump_json()
    assert packed.model_dump(mode="json") == plain.model_dump(mode="json")
    again = Table.model_validate_json(packed.model_dump_json())
    assert isinstance(again.rows, list) and again == packed and packed == again
    assert Table.model_json_schema()["properties"]["rows"]["type"] == "array"
    with pytest.raises(ValueError):
        Table.model_validate({"rows": [{"value": 1.0}]})  # a list is still validated row by row
    assert json.loads(packed.model_dump_json())["rows"][1] == {"name": "b", "value": None}
