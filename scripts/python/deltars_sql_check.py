#!/usr/bin/env python3
"""Run the predicates spark_sql_check.py ran through delta-rs, and count them on a full scan too.

Reads spark_sql_check.py's JSON (a file, or - for stdin) and, for every table Spark could query,
answers the same questions in two ways that share nothing with Spark:
  "sql":  delta-rs's DataFusion SQL (QueryBuilder), which prunes files with the Delta statistics
          and row groups and pages with the Parquet statistics and page indexes;
  "scan": the whole table read into Arrow (no pruning), counted with pyarrow.compute.
Output: {"tables": {LOCATION: {"sql": COUNTS, "scan": COUNTS}}}, COUNTS being {"count": N,
"history": N, "v0_count": N, "columns": {NAME: {"not_null": N, "ge_min": N, "lt_max": N}}}.

    deltars_sql_check.py SPARK_JSON [--storage-option KEY=VALUE ...]
"""
import argparse
import datetime
import decimal
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, QueryBuilder

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deltars_read import read_all  # noqa: E402

PROG = "deltars_sql_check"


def sql_literal(v):
    kind, text = v["kind"], v["text"]
    if kind == "string":
        return "'" + text.replace("'", "''") + "'"
    if kind == "decimal":
        return f"CAST('{text}' AS DECIMAL(38,18))"
    if kind == "date":
        return f"CAST('{text}' AS DATE)"
    if kind == "timestamp":
        return f"arrow_cast('{text.replace(' ', 'T')}Z', 'Timestamp(Microsecond, Some(\"UTC\"))')"
    if kind == "double":
        return f"CAST('{text}' AS DOUBLE)"
    return text


def arrow_scalar(v, typ):
    kind, text = v["kind"], v["text"]
    if kind == "decimal":
        return pa.scalar(decimal.Decimal(text), type=typ)
    if kind == "date":
        return pa.scalar(datetime.date.fromisoformat(text), type=typ)
    if kind == "timestamp":
        t = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
        return pa.scalar(t, type=typ)
    if kind == "integer":
        return pa.scalar(int(text), type=typ)
    if kind == "double":
        return pa.scalar(float(text), type=typ)
    return pa.scalar(text, type=typ)


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def via_sql(dt, spark):
    qb = QueryBuilder().register("t", dt)

    def count(where=""):
        batches = qb.execute(f"SELECT count(*) AS n FROM t {where}").read_all()
        return int(pa.table(batches).column("n")[0].as_py())

    out = {"count": count(), "columns": {}}
    for name, col in spark["columns"].items():
        c = quote(name)
        got = {"not_null": count(f"WHERE {c} IS NOT NULL")}
        if "min" in col:
            got["ge_min"] = count(f"WHERE {c} >= {sql_literal(col['min'])}")
            got["lt_max"] = count(f"WHERE {c} < {sql_literal(col['max'])}")
        out["columns"][name] = got
    return out


def via_scan(table, spark):
    out = {"count": table.num_rows, "columns": {}}
    for name, col in spark["columns"].items():
        arr = table.column(name)
        got = {"not_null": len(arr) - arr.null_count}
        if "min" in col:
            got["ge_min"] = pc.sum(pc.greater_equal(arr, arrow_scalar(col["min"], arr.type))).as_py() or 0
            got["lt_max"] = pc.sum(pc.less(arr, arrow_scalar(col["max"], arr.type))).as_py() or 0
        out["columns"][name] = got
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spark_json")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    opts = dict(kv.partition("=")[::2] for kv in args.storage_option)
    src = sys.stdin if args.spark_json == "-" else open(args.spark_json)
    spark = json.load(src)["tables"]
    result, failed = {}, False
    for loc, want in spark.items():
        if "error" in want:
            continue
        try:
            so = opts if loc.startswith("s3://") else None
            dt = DeltaTable(loc, storage_options=so)
            sql, scan = via_sql(dt, want), via_scan(read_all(dt), want)
            for r in (sql, scan):
                r["history"] = len(dt.history())
                r["v0_count"] = read_all(DeltaTable(loc, version=0, storage_options=so)).num_rows
            result[loc] = {"sql": sql, "scan": scan}
        except Exception as exc:  # name the table that could not be read
            result[loc] = {"error": f"{type(exc).__name__}: {exc}"[:1500]}
            failed = True
    json.dump({"tables": result}, sys.stdout)
    print()
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
