#!/usr/bin/env python3
"""Consume Avro records from Kafka the way any team would, with no ddb2delta code: confluent-kafka's
registry-aware AvroDeserializer (fastavro underneath), schemas fetched from the registry by the id
each record carries. Prints one JSON document per record: {"key": ..., "value": ...}.

    avro_consume.py --bootstrap HOST:PORT --registry URL --topic T --count N [--reader-schema FILE]

With --reader-schema, values are decoded with that schema as the reader schema (Avro schema
resolution from each record's writer schema), e.g. the newest version of the subject.
Non-JSON values are printed as {"$bytes": base64}, {"$decimal": plain text}, and timestamps as
epoch milliseconds.
"""
import argparse
import base64
import datetime
import decimal
import json
import os
import sys
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": format(value.normalize(), "f") if value != 0 else "0"}
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--reader-schema", help="file with the Avro schema to read values with")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the records")
    args = ap.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    reader_schema = None
    if args.reader_schema:
        with open(args.reader_schema, encoding="utf-8") as f:
            reader_schema = f.read()
    values = AvroDeserializer(registry, schema_str=reader_schema)
    keys = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "avro-consume-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe([args.topic])
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=args.timeout)
    seen = 0
    try:
        while seen < args.count:
            if datetime.datetime.now() > deadline:
                print(f"avro_consume: only {seen} of {args.count} records from {args.topic} in {args.timeout}s", file=sys.stderr)
                return 1
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                print(f"avro_consume: {msg.error()}", file=sys.stderr)
                return 1
            key = keys(msg.key(), SerializationContext(args.topic, MessageField.KEY))
            value = values(msg.value(), SerializationContext(args.topic, MessageField.VALUE))
            print(json.dumps({"offset": msg.offset(), "key": plain(key), "value": plain(value)}, sort_keys=True))
            seen += 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip native-library teardown, as read_table.py does
