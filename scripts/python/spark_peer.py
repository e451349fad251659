#!/usr/bin/env python3
"""What a Databricks team would run instead of ddb2delta, for make bench-e2e's peer benchmark:
Apache Spark Structured Streaming (pyspark + delta-spark, Spark's own Kafka source and sink and
its Avro functions) doing one ddb2delta job on a topic of ddb2delta change events, from the
earliest offset until every record is processed (trigger availableNow).

    spark_peer.py --job sink-changelog|sink-mirror|enricher --bootstrap HOST:PORT --registry URL
                  --topic T --out DIR --out-topic T2 --count N [--max-offsets 100000] [--limit-s S]

Jobs:
  sink-changelog  every event appended to a Delta table (the envelope's op, before, after and
                  source, plus the Kafka topic, partition and offset);
  sink-mirror     foreachBatch: the newest event per key in the batch, then MERGE into a Delta
                  table: delete on op d, update, insert, each only when its sequence number is
                  newer than the row's (the sequence guard);
  enricher        events whose item's region is not eu-west, projected (id, line, written_ms,
                  status, amount, qty, region, city) into an envelope of before/after images,
                  written to --out-topic as Avro in the Confluent wire format (magic byte, schema
                  id registered in the registry) keyed by the input's key.

Values are decoded with the newest value schema of the topic's subject: ddb2delta's typed schemas
only ever add union branches when every attribute is present from the first event (as in the
benchmark's generated items), and data written with an older schema then decodes with the newest.

Prints one JSON line: {"job", "rows", "cpu_s", "wall_s", "rss_mb"}: CPU of Spark's JVM from the
query's start to its end (the JVM's start-up is not counted), its peak RSS.
"""
import argparse
import glob
import json
import os
import sys
import tempfile
import time
import urllib.request

# The Spark reader's log configuration (errors only, to stderr): this script runs beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from spark_read_table import LOG4J2  # noqa: E402


def registry(url, path, body=None):
    req = urllib.request.Request(url.rstrip("/") + path, method="POST" if body is not None else "GET")
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def proc_stat(pid):
    """CPU seconds (user + system) and peak RSS (MiB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) // 1024
    return cpu, rss


def session(work):
    from pyspark.sql import SparkSession

    jars = sorted(glob.glob(os.path.join(sys.prefix, "spark-jars", "*.jar")) +
                  glob.glob(os.path.join(sys.prefix, "spark-peer-jars", "*.jar")))
    if not jars:
        raise RuntimeError("no Spark jars: run scripts/stack install-spark-peer")
    log4j = os.path.join(work, "log4j2.properties")
    with open(log4j, "w") as f:
        f.write(LOG4J2)
    # Both cores, as the services get; shuffles sized to them rather than Spark's 200.
    return (
        SparkSession.builder.master("local[2]")
        .config("spark.jars", ",".join(jars))
        .config("spark.driver.memory", "2g")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j} -Duser.timezone=UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.local.dir", work)
        .config("spark.sql.warehouse.dir", os.path.join(work, "warehouse"))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .getOrCreate()
    )


def scalar(col, dtype, target):
    """A typed-encoding field as one Spark type: a union of several kinds (long or decimal) is a
    struct of members in Spark; the first member set wins."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    if isinstance(dtype, StructType) and dtype.fieldNames() and dtype.fieldNames()[0].startswith("member"):
        return F.coalesce(*[col[m].cast(target) for m in dtype.fieldNames()])
    return col.cast(target)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", required=True, choices=["sink-changelog", "sink-mirror", "enricher"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--max-offsets", type=int, default=100000)
    ap.add_argument("--limit-s", type=int, default=0, help="stop the query after this many seconds (0: run to the end)")
    a = ap.parse_args()

    latest = registry(a.registry, f"/subjects/{a.topic}-value/versions/latest")
    schema = latest["schema"]
    work = tempfile.mkdtemp(prefix="spark-peer-")
    spark = session(work)
    from pyspark.sql import functions as F
    from pyspark.sql.avro.functions import from_avro, to_avro
    from pyspark.sql.window import Window

    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", a.bootstrap)
        .option("subscribe", a.topic)
        .option("startingOffsets", "earliest")
        .option("kafka.isolation.level", "read_committed")
        .option("maxOffsetsPerTrigger", a.max_offsets)
        .option("failOnDataLoss", "false")
        .load()
    )
    # The Confluent wire format: magic byte, 4-byte schema id, then the Avro body.
    events = raw.select(
        "key", "topic", "partition", "offset",
        from_avro(F.expr("substring(value, 6)"), schema, {"mode": "FAILFAST"}).alias("e"),
    )
    itype = {f.name: f.dataType for f in events.schema["e"].dataType["after"].dataType.fields}
    checkpoint = os.path.join(a.out, "_checkpoint")

    if a.job == "sink-changelog":
        rows = events.select(
            "e.op", "e.before", "e.after", "e.ts_ms", "e.source",
            F.col("topic").alias("_kafka_topic"), F.col("partition").alias("_kafka_partition"), F.col("offset").alias("_kafka_offset"),
        )
        begin = lambda: (rows.writeStream.format("delta").option("checkpointLocation", checkpoint)
                         .trigger(availableNow=True).start(os.path.join(a.out, "table")))
    elif a.job == "sink-mirror":
        from delta.tables import DeltaTable

        path = os.path.join(a.out, "table")
        img = F.coalesce(F.col("e.after"), F.col("e.before"))
        flat = events.select(
            scalar(img["id"], itype["id"], "string").alias("id"),
            scalar(img["line"], itype["line"], "long").alias("line"),
            F.col("e.op").alias("op"),
            F.col("e.source.sequence_number").cast("decimal(38,0)").alias("seq"),
            F.col("e.after").alias("item"),
        )

        def merge(batch, _):
            newest = (batch.withColumn("rn", F.row_number().over(Window.partitionBy("id", "line").orderBy(F.col("seq").desc())))
                      .filter("rn = 1").drop("rn"))
            if not DeltaTable.isDeltaTable(spark, path):
                newest.filter("op != 'd'").drop("op").limit(0).write.format("delta").save(path)
            t = DeltaTable.forPath(spark, path)
            cols = {c: f"s.{c}" for c in ["id", "line", "seq", "item"]}
            (t.alias("t").merge(newest.alias("s"), "t.id = s.id AND t.line = s.line")
             .whenMatchedDelete(condition="s.op = 'd' AND s.seq > t.seq")
             .whenMatchedUpdate(condition="s.op != 'd' AND s.seq > t.seq", set=cols)
             .whenNotMatchedInsert(condition="s.op != 'd'", values=cols)
             .execute())

        begin = lambda: (flat.writeStream.foreachBatch(merge).option("checkpointLocation", checkpoint)
                         .trigger(availableNow=True).start())
    else:
        def project(image):
            return F.when(F.col(image).isNull(), F.lit(None)).otherwise(F.struct(
                scalar(F.col(image)["id"], itype["id"], "string").alias("id"),
                scalar(F.col(image)["line"], itype["line"], "long").alias("line"),
                scalar(F.col(image)["written_ms"], itype["written_ms"], "long").alias("written_ms"),
                scalar(F.col(image)["status"], itype["status"], "string").alias("status"),
                scalar(F.col(image)["amount"], itype["amount"], "decimal(12,2)").alias("amount"),
                scalar(F.col(image)["qty"], itype["qty"], "long").alias("qty"),
                scalar(F.col(image)["region"], itype["region"], "string").alias("region"),
                F.col(image)["address"]["city"].alias("city"),
            ))

        image = {"type": "record", "name": "image", "fields": [
            {"name": "id", "type": ["null", "string"]}, {"name": "line", "type": ["null", "long"]},
            {"name": "written_ms", "type": ["null", "long"]}, {"name": "status", "type": ["null", "string"]},
            {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}]},
            {"name": "qty", "type": ["null", "long"]}, {"name": "region", "type": ["null", "string"]},
            {"name": "city", "type": ["null", "string"]},
        ]}
        out_schema = {"type": "record", "name": "items_slim", "namespace": "io.ddb2delta.spark", "fields": [
            {"name": "op", "type": ["null", "string"]}, {"name": "ts_ms", "type": ["null", "long"]},
            {"name": "sequence_number", "type": ["null", "string"]},
            {"name": "before", "type": ["null", image]}, {"name": "after", "type": ["null", "image"]},
        ]}
        out_json = json.dumps(out_schema)
        sid = registry(a.registry, f"/subjects/{a.out_topic}-value/versions", {"schema": out_json})["id"]
        header = bytes([0]) + int(sid).to_bytes(4, "big")
        region = scalar(F.coalesce(F.col("e.after"), F.col("e.before"))["region"], itype["region"], "string")
        body = F.struct(
            F.col("e.op").alias("op"), F.col("e.ts_ms").cast("long").alias("ts_ms"),
            F.col("e.source.sequence_number").alias("sequence_number"),
            project("e.before").alias("before"), project("e.after").alias("after"),
        )

        def publish(batch, _):
            (batch.filter(region.isNull() | (region != "eu-west"))
             .select("key", F.concat(F.lit(header), to_avro(body, out_json)).alias("value"))
             .write.format("kafka").option("kafka.bootstrap.servers", a.bootstrap).option("topic", a.out_topic).save())

        begin = lambda: (events.writeStream.foreachBatch(publish).option("checkpointLocation", checkpoint)
                         .trigger(availableNow=True).start())

    pid = spark.sparkContext._gateway.proc.pid
    cpu0, _ = proc_stat(pid)
    t0 = time.monotonic()
    query = begin()
    if a.limit_s > 0:
        if not query.awaitTermination(a.limit_s):
            query.stop()
    else:
        query.awaitTermination()
    wall = time.monotonic() - t0
    cpu1, rss = proc_stat(pid)
    # Rows read, from the query's own progress reports (one per micro-batch).
    rows = sum(p["numInputRows"] for p in query.recentProgress)
    print(json.dumps({"job": a.job, "rows": rows, "cpu_s": round(cpu1 - cpu0, 2), "wall_s": round(wall, 2), "rss_mb": rss}))
    spark.stop()


if __name__ == "__main__":
    main()
