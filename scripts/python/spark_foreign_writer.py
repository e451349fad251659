#!/usr/bin/env python3
"""Apache Spark with Delta Lake as another writer of a table ddb2delta's sink is writing.

Reads one JSON command per line on stdin and answers one JSON line on stdout per command, so a
test can interleave Spark's commits with its own actions:

    {"op": "optimize"}                          OPTIMIZE delta.`LOCATION`
    {"op": "zorder", "by": ["col", ...]}        OPTIMIZE delta.`LOCATION` ZORDER BY (col, ...)
    {"op": "delete", "column": "_key", "values": ["...", ...]}
                                                DELETE FROM delta.`LOCATION` WHERE col IN (...)
    {"op": "history"}                           DESCRIBE HISTORY: [{version, operation, engine}]

Answer: {"op": ..., "ok": true, "version": V, "attempts": N} (V: the table's version after it),
or {"op": ..., "ok": false, "error": "..."}. A command that loses a race with a concurrent commit
(Delta's ConcurrentModificationException family) is retried, as a user's job would be, up to 20
times. Run with the Spark venv's python.

    spark_foreign_writer.py LOCATION
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spark_read_table as srt  # noqa: E402

PROG = "spark_foreign_writer"


def quote(name):
    return "`" + name.replace("`", "``") + "`"


def sql_string(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def latest(spark, ref):
    return spark.sql(f"DESCRIBE HISTORY {ref} LIMIT 1").first()["version"]


def run(spark, ref, cmd):
    op = cmd["op"]
    if op == "optimize":
        spark.sql(f"OPTIMIZE {ref}").collect()
    elif op == "zorder":
        spark.sql(f"OPTIMIZE {ref} ZORDER BY ({', '.join(quote(c) for c in cmd['by'])})").collect()
    elif op == "delete":
        values = ", ".join(sql_string(v) for v in cmd["values"])
        spark.sql(f"DELETE FROM {ref} WHERE {quote(cmd['column'])} IN ({values})").collect()
    elif op == "history":
        rows = spark.sql(f"DESCRIBE HISTORY {ref}").select("version", "operation", "engineInfo").collect()
        return {"history": [{"version": r[0], "operation": r[1], "engine": r[2]} for r in rows]}
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"version": latest(spark, ref)}


def concurrent(exc):
    text = str(exc)
    return "Concurrent" in text or "ProtocolChanged" in text or "MetadataChanged" in text


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    location = sys.argv[1]
    os.environ["TZ"] = "UTC"
    time.tzset()
    with tempfile.TemporaryDirectory(prefix=PROG + "-") as workdir:
        path, hadoop_conf = location, {}
        if location.startswith("s3://"):
            path, hadoop_conf = srt.s3_settings(location, {})
        spark = srt.spark_session(srt.find_jars(None), hadoop_conf, workdir)
        ref = f"delta.{quote(path)}"
        print(json.dumps({"op": "start", "ok": True}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            answer = {"op": cmd.get("op")}
            for attempt in range(1, 21):
                try:
                    answer.update(run(spark, ref, cmd), ok=True, attempts=attempt)
                    break
                except Exception as exc:  # retried when it lost a race, else reported
                    if concurrent(exc) and attempt < 20:
                        continue
                    answer.update(ok=False, error=srt.short(exc), attempts=attempt)
                    break
            print(json.dumps(answer), flush=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
