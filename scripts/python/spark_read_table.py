#!/usr/bin/env python3
"""Read a Delta table with Apache Spark + Delta Lake and print it as one JSON document.

A second independent reader beside read_table.py (delta-rs), with the same command line and the
same output: {"version": N, "schema": {...}, "num_rows": N, "rows": [...]}; bytes as base64,
decimals as strings, timestamps (in UTC) and dates in ISO 8601. It shares no code with
ddb2delta's Delta writer nor with delta-rs. Run it with the Spark venv's python
(.stack/spark-venv/bin/python, installed by `scripts/stack install`).

    spark_read_table.py LOCATION [--limit N] [--sort COL] [--storage-option KEY=VALUE ...]

LOCATION is a directory or an s3:// URL (read through s3a). For S3 against a local server pass,
e.g., --storage-option AWS_ENDPOINT_URL=http://127.0.0.1:17070 plus AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION (or set them in the environment, as for delta-rs).

Spark runs in-process (local[1], 1g driver, no UI) with the jars `scripts/stack install` fetched
(the venv's spark-jars folder, or --jars / STACK_SPARK_JARS): a read needs no network.
"""
import argparse
import base64
import datetime
import decimal
import glob
import json
import os
import sys
import tempfile
import time

PROG = "spark_read_table"

# storage options (delta-rs spelling) that mean nothing to a read through s3a
IGNORED_OPTIONS = {"AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_EC2_METADATA_DISABLED", "AWS_CONDITIONAL_PUT"}
KNOWN_OPTIONS = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
} | IGNORED_OPTIONS

LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
# the logger of the process pyspark starts: at the root's level, Spark prints no log level banner
logger.repl.name = org.apache.spark.api.python.PythonGatewayServer
logger.repl.level = error
"""


def jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError(f"cannot print {type(value).__name__}")


def truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def short(exc):
    """The gist of an error: py4j's Java errors carry whole stack traces."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("at ", "... "))]
    text = " | ".join(lines[:4])
    return text[:1500] or type(exc).__name__


def find_jars(explicit):
    folder = explicit or os.environ.get("STACK_SPARK_JARS") or os.path.join(sys.prefix, "spark-jars")
    jars = sorted(glob.glob(os.path.join(folder, "*.jar")))
    if not jars:
        raise RuntimeError(f"no jars in {folder} (run scripts/stack install, or pass --jars DIR)")
    return jars


def s3_settings(location, opts):
    """s3:// -> s3a://, and the Hadoop settings for the endpoint and credentials."""
    opt = {k.upper(): v for k, v in opts.items()}
    for key in sorted(opt):
        if key not in KNOWN_OPTIONS:
            print(f"{PROG}: ignoring storage option {key}", file=sys.stderr)

    def get(*keys):
        for k in keys:
            if opt.get(k):
                return opt[k]
        for k in keys:
            if os.environ.get(k):
                return os.environ[k]
        return None

    conf = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.path.style.access": "false" if truthy(get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") or "") else "true",
        # a few quick retries, then a clear failure (when the server is down: in seconds, not minutes)
        "fs.s3a.attempts.maximum": "2",
        "fs.s3a.retry.limit": "2",
        "fs.s3a.retry.interval": "200ms",
        "fs.s3a.connection.establish.timeout": "5000",
        "fs.s3a.connection.timeout": "30000",
    }
    endpoint = get("AWS_ENDPOINT_URL", "AWS_ENDPOINT")
    if endpoint:
        conf["fs.s3a.endpoint"] = endpoint
        plain = endpoint.startswith("http://") or truthy(get("AWS_ALLOW_HTTP") or "")
        conf["fs.s3a.connection.ssl.enabled"] = "false" if plain else "true"
    region = get("AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        conf["fs.s3a.endpoint.region"] = region
    key, secret, token = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"), get("AWS_SESSION_TOKEN")
    if key and secret:
        conf["fs.s3a.access.key"] = key
        conf["fs.s3a.secret.key"] = secret
        if token:
            conf["fs.s3a.session.token"] = token
            conf["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        else:
            conf["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    return "s3a://" + location[len("s3://"):], conf


def spark_session(jars, hadoop_conf, workdir, cores=1, long_lived=False):
    """A local Spark session with Delta Lake. cores: task threads. long_lived: a session that runs
    hundreds of queries (the JIT's optimizing compiler pays for itself) rather than a few."""
    from pyspark.sql import SparkSession

    log4j = os.path.join(workdir, "log4j2.properties")
    with open(log4j, "w") as f:
        f.write(LOG4J2)
    # JVM warnings to stderr (stdout carries the JSON); serial GC and, for a short-lived JVM on a
    # small table, C1 only: it starts its work sooner.
    java_opts = (
        f"-Dlog4j2.configurationFile=file:{log4j} -Duser.timezone=UTC"
        " -Xlog:disable -Xlog:all=warning:stderr -XX:+UseSerialGC"
    )
    if not long_lived:
        java_opts += " -XX:TieredStopAtLevel=1"
    b = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(PROG)
        .config("spark.jars", ",".join(jars))
        .config("spark.driver.memory", "1g")
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .config("spark.local.dir", workdir)
        .config("spark.sql.warehouse.dir", os.path.join(workdir, "warehouse"))
        # test-sized tables: no code generation, one partition to rebuild the Delta log state
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.databricks.delta.snapshotPartitions", "1")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    )
    for k, v in hadoop_conf.items():
        b = b.config("spark.hadoop." + k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def to_python(value, dtype):
    """A collected Spark value as read_table.py (pyarrow's to_pylist) gives it."""
    from pyspark.sql import types as T

    if value is None:
        return None
    if isinstance(dtype, T.StructType):
        return {f.name: to_python(value[i], f.dataType) for i, f in enumerate(dtype.fields)}
    if isinstance(dtype, T.ArrayType):
        return [to_python(v, dtype.elementType) for v in value]
    if isinstance(dtype, T.MapType):  # pyarrow gives a map as a list of (key, value) pairs
        return [(to_python(k, dtype.keyType), to_python(v, dtype.valueType)) for k, v in value.items()]
    if isinstance(dtype, T.TimestampType):
        # pyspark makes a naive local datetime; this process runs with TZ=UTC, so it is UTC
        return value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(dtype, T.BinaryType):
        return bytes(value)
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("location")
    ap.add_argument("--limit", type=int, default=0, help="print at most N rows (0: all)")
    ap.add_argument("--sort", action="append", default=[], help="sort rows by this column (repeatable)")
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jars", metavar="DIR", help="folder of the Delta/hadoop-aws jars (default: the venv's spark-jars)")
    args = ap.parse_args()

    opts = {}
    for kv in args.storage_option:
        key, sep, val = kv.partition("=")
        if not sep:
            ap.error(f"--storage-option {kv!r} is not KEY=VALUE")
        opts[key] = val

    # Timestamps: the JVM, Spark SQL and pyspark's conversion to datetime all in UTC.
    os.environ["TZ"] = "UTC"
    time.tzset()

    spark = None
    with tempfile.TemporaryDirectory(prefix="spark_read_table-") as workdir:
        try:
            path, hadoop_conf = args.location, {}
            if path.startswith("s3://"):
                path, hadoop_conf = s3_settings(path, opts)
            elif path.startswith("s3a://"):
                _, hadoop_conf = s3_settings("s3://" + path[len("s3a://"):], opts)
            spark = spark_session(find_jars(args.jars), hadoop_conf, workdir)

            from delta.tables import DeltaTable
            from pyspark.sql import functions as F

            version = DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
            df = spark.read.format("delta").option("versionAsOf", version).load(path)
            if args.sort:  # ascending, nulls last: as pyarrow's sort_by
                df = df.orderBy(*[F.col(c).asc_nulls_last() for c in args.sort])
            schema = df.schema
            rows = [
                {f.name: to_python(r[i], f.dataType) for i, f in enumerate(schema.fields)} for r in df.collect()
            ]
        except Exception as exc:  # report which table could not be read, and why
            print(f"{PROG}: cannot read Delta table {args.location}: {short(exc)}", file=sys.stderr)
            return 1
        finally:
            if spark is not None:
                try:
                    spark.stop()
                except Exception:
                    pass
    num_rows = len(rows)
    if args.limit:
        rows = rows[-args.limit:]
    json.dump(
        {"version": int(version), "schema": schema.jsonValue(), "num_rows": num_rows, "rows": rows},
        sys.stdout,
        default=jsonable,
    )
    print()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
