"""How the project's tools read a whole Delta table with delta-rs (the `deltalake` package).

deltalake 1.6.6's pyarrow paths (DeltaTable.to_pyarrow_table, to_pyarrow_dataset, to_pandas)
refuse tables with the deletionVectors reader feature ("not yet supported by the deltalake
reader"); its DataFusion engine (DeltaTable.scan, QueryBuilder) reads them, applying the
vectors. Tables without the feature keep the pyarrow path, which returns rows in file order.
"""
import pyarrow as pa


def has_deletion_vectors(table) -> bool:
    """Whether the table needs its readers to apply deletion vectors."""
    features = table.protocol().reader_features or []
    return "deletionVectors" in features


def _plain(t: pa.DataType) -> pa.DataType:
    """t with DataFusion's view types (string_view, binary_view) replaced by the plain ones the
    pyarrow path returns, which pyarrow's sort and take kernels accept."""
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_plain(f.type)) for f in t])
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_plain(t.value_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_plain(t.value_type)))
    if pa.types.is_map(t):
        return pa.map_(t.key_field.with_type(_plain(t.key_type)), t.item_field.with_type(_plain(t.item_type)))
    return t


def read_all(table) -> pa.Table:
    """Every row of the table's loaded version, as a pyarrow Table."""
    if has_deletion_vectors(table):
        data = pa.RecordBatchReader.from_stream(table.scan()).read_all()
        schema = pa.schema([f.with_type(_plain(f.type)) for f in data.schema], metadata=data.schema.metadata)
        return data.cast(schema)
    return table.to_pyarrow_table()
