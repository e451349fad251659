#!/usr/bin/env python3
"""Read every version of a ddb2delta mirror with Apache Spark + Delta Lake (time travel), and
print each version's rows as [_key, _sequence_number] pairs: a test compares them with the state
it expects after each commit, so a deletion vector Spark reads otherwise at any version shows.

    spark_versions.py LOCATION [--from N] [--cdf] [--storage-option KEY=VALUE ...]

Output: {"latest": N, "versions": [{"version": V, "rows": [[key, seq], ...]}, ...]} with rows
sorted, versions from --from (default 0) to the latest; with --cdf also "changes": the table's
change data feed from version --from (readChangeFeed), as sorted [version, change type, key, seq].
Run it with the Spark venv's python; the session is spark_read_table.py's.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spark_read_table as srt  # noqa: E402

PROG = "spark_versions"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("location")
    ap.add_argument("--from", dest="start", type=int, default=0, help="first version to read")
    ap.add_argument("--cdf", action="store_true", help="also read the change data feed")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    opts = dict(kv.partition("=")[::2] for kv in args.storage_option)
    os.environ["TZ"] = "UTC"
    time.tzset()
    spark = None
    out = {"versions": []}
    with tempfile.TemporaryDirectory(prefix=PROG + "-") as workdir:
        try:
            path, hadoop_conf = args.location, {}
            if path.startswith("s3://"):
                path, hadoop_conf = srt.s3_settings(path, opts)
            spark = srt.spark_session(srt.find_jars(None), hadoop_conf, workdir)
            from delta.tables import DeltaTable

            latest = DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
            out["latest"] = int(latest)
            for v in range(args.start, latest + 1):
                df = spark.read.format("delta").option("versionAsOf", v).load(path)
                rows = sorted([r[0], r[1]] for r in df.select("_key", "_sequence_number").collect())
                out["versions"].append({"version": v, "rows": rows})
            if args.cdf:
                feed = (
                    spark.read.format("delta")
                    .option("readChangeFeed", "true")
                    .option("startingVersion", args.start)
                    .load(path)
                    .select("_commit_version", "_change_type", "_key", "_sequence_number")
                )
                out["changes"] = sorted([int(r[0]), r[1], r[2], r[3]] for r in feed.collect())
        except Exception as exc:  # report which table could not be read, and why
            print(f"{PROG}: cannot read Delta table {args.location}: {srt.short(exc)}", file=sys.stderr)
            return 1
        finally:
            if spark is not None:
                try:
                    spark.stop()
                except Exception:
                    pass
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
