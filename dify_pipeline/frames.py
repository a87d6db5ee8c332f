"""Moving a stage's data between Arrow (storage) and pandas (the cleaning rules) without losing types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

# The text dtype on pandas 2.3 as on 3.x: what pandas 3 calls "str" (Arrow-backed, a missing value is NaN).
# pandas 2 reads the name "str" as object, where None becomes the text "None" and Int64's NA the text "<NA>".
TEXT = pd.StringDtype("pyarrow", na_value=np.nan)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Integers stay integers even with nulls (nullable Int64), text is `TEXT`, timestamps keep zone and unit."""
    return table.to_pandas(types_mapper=_pandas_type)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A frame as a table of exactly `schema` (column order and types), failing loudly on a mismatch."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def _pandas_type(arrow_type: pa.DataType):
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TEXT
    return None
