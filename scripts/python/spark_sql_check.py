#!/usr/bin/env python3
"""Query Delta tables with Spark SQL the way a user would, and print what Spark answered as JSON.

For each table: the row count, and for every top-level column `c`:
  SELECT count(*) FROM delta.`LOCATION` WHERE c IS NOT NULL
and, for orderable columns (strings, numbers, decimals, dates, timestamps), the column's min and
max as Spark computes them, then
  ... WHERE c >= <min>      ... WHERE c < <max>
plus `DESCRIBE HISTORY` (the number of versions) and `VERSION AS OF 0` (its row count).
Predicates go through everything a reader prunes with: Delta's file statistics, Parquet row-group
statistics and page indexes. deltars_sql_check.py runs the same predicates through delta-rs, and
the Go conformance test compares the two (and a full scan).

    spark_sql_check.py LOCATION [LOCATION ...] [--storage-option KEY=VALUE ...]

Output: {"tables": {LOCATION: {"count": N, "history": N, "v0_count": N, "columns": {NAME:
{"type": T, "not_null": N, "min": V, "max": V, "ge_min": N, "lt_max": N}}}}}, where V is
{"kind": "string"|"integer"|"decimal"|"date"|"timestamp"|"double", "text": ...}. A table Spark
cannot query gets {"error": "..."} and the exit status is 1.
"""
import argparse
import datetime
import decimal
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spark_read_table as srt  # noqa: E402  (the session and S3 settings are shared)

PROG = "spark_sql_check"
CONCURRENCY = 3


def kind_of(dtype):
    from pyspark.sql import types as T

    if isinstance(dtype, T.StringType):
        return "string"
    if isinstance(dtype, (T.LongType, T.IntegerType, T.ShortType, T.ByteType)):
        return "integer"
    if isinstance(dtype, T.DecimalType):
        return "decimal"
    if isinstance(dtype, T.DateType):
        return "date"
    if isinstance(dtype, T.TimestampType):
        return "timestamp"
    if isinstance(dtype, (T.DoubleType, T.FloatType)):
        return "double"
    return None  # booleans, binary, structs, arrays, maps: IS NOT NULL only


def text_of(kind, value):
    if kind == "timestamp":  # naive, in the session time zone (UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if kind == "date":
        return value.isoformat()
    if kind == "decimal":
        return format(value, "f")
    return str(value) if kind != "string" else value


def literal(kind, text):
    """A Spark SQL literal (string literals take backslash escapes in Spark)."""
    if kind == "string":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == "decimal":
        return f"CAST('{text}' AS DECIMAL(38,18))"
    if kind == "date":
        return f"DATE '{text}'"
    if kind == "timestamp":
        return f"TIMESTAMP '{text}'"
    if kind == "double":
        return f"CAST('{text}' AS DOUBLE)"
    return text


def quote(name):
    return "`" + name.replace("`", "``") + "`"


def check(spark, location, path):
    ref = f"delta.{quote(path)}"
    count = lambda where="": spark.sql(f"SELECT count(*) FROM {ref} {where}").first()[0]  # noqa: E731
    out = {"count": count(), "columns": {}}
    schema = spark.read.format("delta").load(path).schema
    orderable = [f for f in schema.fields if kind_of(f.dataType)]
    bounds = {}
    if orderable:  # every column's min and max in one scan
        aggs = ", ".join(f"min({quote(f.name)}), max({quote(f.name)})" for f in orderable)
        row = spark.sql(f"SELECT {aggs} FROM {ref}").first()
        bounds = {f.name: (row[2 * i], row[2 * i + 1]) for i, f in enumerate(orderable)}
    # Every predicate is a query of its own (so that each goes through file skipping and Parquet
    # pruning on its own), and the queries run CONCURRENCY at a time: each spends most of its time
    # planning in the driver, which then overlaps.
    queries = []  # (column, key, WHERE clause)
    for f in schema.fields:
        c = quote(f.name)
        col = {"type": f.dataType.simpleString()}
        queries.append((f.name, "not_null", f"WHERE {c} IS NOT NULL"))
        kind = kind_of(f.dataType)
        if kind:
            lo, hi = bounds[f.name]
            if lo is not None:
                col["min"] = {"kind": kind, "text": text_of(kind, lo)}
                col["max"] = {"kind": kind, "text": text_of(kind, hi)}
                queries.append((f.name, "ge_min", f"WHERE {c} >= {literal(kind, col['min']['text'])}"))
                queries.append((f.name, "lt_max", f"WHERE {c} < {literal(kind, col['max']['text'])}"))
        out["columns"][f.name] = col
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        counts = pool.map(lambda q: count(q[2]), queries)
        for (name, key, _), n in zip(queries, counts):
            out["columns"][name][key] = n
    history = spark.sql(f"DESCRIBE HISTORY {ref}").select("version").collect()
    out["history"] = len(history)
    out["latest"] = max(r[0] for r in history)
    out["v0_count"] = spark.sql(f"SELECT count(*) FROM {ref} VERSION AS OF 0").first()[0]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("locations", nargs="+")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jars", metavar="DIR")
    args = ap.parse_args()
    opts = dict(kv.partition("=")[::2] for kv in args.storage_option)

    os.environ["TZ"] = "UTC"
    time.tzset()
    result, failed = {}, False
    with tempfile.TemporaryDirectory(prefix=PROG + "-") as workdir:
        hadoop_conf = {}
        if any(loc.startswith("s3://") for loc in args.locations):
            _, hadoop_conf = srt.s3_settings("s3://x", opts)
        spark = srt.spark_session(srt.find_jars(args.jars), hadoop_conf, workdir, cores=2, long_lived=True)
        try:
            for loc in args.locations:
                path = "s3a://" + loc[len("s3://"):] if loc.startswith("s3://") else loc
                try:
                    result[loc] = check(spark, loc, path)
                except Exception as exc:  # name the table and the query that failed
                    result[loc] = {"error": srt.short(exc)}
                    failed = True
        finally:
            try:
                spark.stop()
            except Exception:
                pass
    json.dump({"tables": result}, sys.stdout, default=str)
    print()
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
