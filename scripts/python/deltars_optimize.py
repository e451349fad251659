#!/usr/bin/env python3
"""delta-rs as another writer: compact a Delta table (DeltaTable.optimize.compact()).

Retries, as a user's job would, when the commit loses a race with a concurrent writer (up to 20
times). Prints {"ok": true, "version": V, "metrics": {...}, "attempts": N} or {"ok": false, ...}.

    deltars_optimize.py LOCATION [--storage-option KEY=VALUE ...]
"""
import argparse
import json
import os
import sys

from deltalake import DeltaTable


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("location")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    opts = dict(kv.partition("=")[::2] for kv in args.storage_option) or None
    out = {"ok": False}
    for attempt in range(1, 21):
        try:
            dt = DeltaTable(args.location, storage_options=opts)
            metrics = dt.optimize.compact()
            out = {"ok": True, "version": dt.version(), "metrics": metrics, "attempts": attempt}
            break
        except Exception as exc:  # retried when it lost a race, else reported
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:1500], "attempts": attempt}
            if "onflict" not in str(exc) and "ommitFailed" not in type(exc).__name__ and "Transaction" not in str(exc):
                break
    print(json.dumps(out, default=str))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
