#!/usr/bin/env python3
"""Read every version of a ddb2delta mirror with delta-rs (time travel through its DataFusion scan,
which applies deletion vectors), and print each version's rows as [_key, _sequence_number] pairs,
as spark_versions.py does with Spark.

    deltars_versions.py LOCATION [--from N] [--storage-option KEY=VALUE ...]

Output: {"latest": N, "versions": [{"version": V, "rows": [[key, seq], ...]}, ...]}.
"""
import argparse
import json
import os
import sys

from deltalake import DeltaTable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deltars_read import read_all  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("location")
    ap.add_argument("--from", dest="start", type=int, default=0, help="first version to read")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    opts = dict(kv.partition("=")[::2] for kv in args.storage_option) or None
    out = {"versions": []}
    try:
        latest = DeltaTable(args.location, storage_options=opts).version()
        out["latest"] = latest
        for v in range(args.start, latest + 1):
            data = read_all(DeltaTable(args.location, version=v, storage_options=opts))
            keys, seqs = data.column("_key").to_pylist(), data.column("_sequence_number").to_pylist()
            out["versions"].append({"version": v, "rows": sorted([k, s] for k, s in zip(keys, seqs))})
    except Exception as exc:  # report which table could not be read, and why
        print(f"deltars_versions: cannot read Delta table {args.location}: {exc}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as read_table.py: no interpreter teardown racing delta-rs's threads
