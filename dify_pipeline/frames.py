"""Moving a stage's data between Arrow (storage) and pandas (the cleaning rules) without losing types."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Integers stay integers even with nulls (nullable Int64), timestamps keep their zone."""
    return table.to_pandas(types_mapper=_nullable_ints)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A frame as a table of exactly `schema` (column order and types), failing loudly on a mismatch."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def _nullable_ints(arrow_type: pa.DataType):
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return None
