#!/usr/bin/env python3
"""Show a Delta table filling up, read with delta-rs: its version, row count and latest rows.

    show_table.py LOCATION [--rows N] [--columns a,b,c] [--follow SECONDS]

Rows are the N with the greatest _producer_time (the newest changes). Item columns are shown
first, then _op and _sequence_number; --columns picks others. With --follow the table is read
again every SECONDS and shown whenever its version moved; Ctrl-C stops.
"""
import argparse
import json
import os
import sys
import time

from deltalake import DeltaTable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deltars_read import read_all  # noqa: E402

LINEAGE = ("_key", "_op", "_sequence_number", "_snapshot", "_ttl_delete", "_source_time", "_producer_time",
           "_source_table", "_shard_id", "_event_id", "_kafka_topic", "_kafka_partition", "_kafka_offset", "_date")


def cell(value, width=28):
    if isinstance(value, str) and len(value) == 40 and value.isdigit():  # a padded sequence number
        value = value.lstrip("0") or "0"
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def show(location, rows, columns):
    table = DeltaTable(location)
    data = read_all(table)
    total = data.num_rows
    names = data.column_names
    if "_producer_time" in names and data.num_rows:
        data = data.sort_by([("_producer_time", "descending")])
    data = data.slice(0, rows)
    if not columns:
        items = [c for c in names if c not in LINEAGE][:6]
        columns = items + [c for c in ("_op", "_sequence_number") if c in names]
    history = table.history(1)
    when = history[0].get("timestamp") if history else None
    stamp = time.strftime("%H:%M:%S", time.localtime(when / 1000)) if when else "?"
    print(f"{location}  version {table.version()} (committed {stamp})  rows {total}")
    print("  " + " | ".join(f"{c[:28]:28}" for c in columns))
    for row in data.select([c for c in columns if c in names]).to_pylist():
        print("  " + " | ".join(f"{cell(row.get(c)):28}" for c in columns))
    sys.stdout.flush()
    return table.version()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("location")
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--columns", default="", help="comma-separated columns to show")
    ap.add_argument("--follow", type=float, default=0, help="read again every SECONDS")
    args = ap.parse_args()
    columns = [c for c in args.columns.split(",") if c]
    try:
        seen = show(args.location, args.rows, columns)
        while args.follow:
            time.sleep(args.follow)
            if DeltaTable(args.location).version() != seen:
                print()
                seen = show(args.location, args.rows, columns)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # say which table could not be read, and why
        print(f"show_table: cannot read Delta table {args.location}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
