"""Reads a whole topic back with confluent-kafka (librdkafka, not the code under test)
and prints one line per message: partition, offset, job header, line header, value.
Reads to partition EOF on every partition and then waits for a quiet second: tansu's
watermarks can be behind the log, so they are not trusted alone.

usage: kafka_read.py BOOTSTRAP TOPIC [--headers]
  --headers: a sixth column, the other headers as JSON
KAFKA_READ_TLS=DIR: mutual TLS with DIR/ca.pem, DIR/client.pem and DIR/client.key.
"""
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
with_headers = sys.argv[3:] == ["--headers"]
config = {
    "bootstrap.servers": bootstrap,
    "group.id": "kafka-read-%d" % time.time_ns(),
    "enable.auto.commit": False,
    "enable.partition.eof": True,
    "auto.offset.reset": "earliest",
}
tls = os.environ.get("KAFKA_READ_TLS")
if tls:
    config.update({
        "security.protocol": "SSL",
        "ssl.ca.location": os.path.join(tls, "ca.pem"),
        "ssl.certificate.location": os.path.join(tls, "client.pem"),
        "ssl.key.location": os.path.join(tls, "client.key"),
    })
c = Consumer(config)
md = c.list_topics(topic, timeout=30)
parts = sorted(md.topics[topic].partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
at_end = {p: False for p in parts}
quiet = None
out = sys.stdout
while True:
    if all(at_end.values()):
        quiet = quiet or time.monotonic()
        if time.monotonic() - quiet > 1.0:
            break
    m = c.poll(0.2)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            at_end[m.partition()] = True
            continue
        raise SystemExit(str(m.error()))
    quiet = None
    at_end[m.partition()] = False
    h = dict(m.headers() or [])
    out.write("%d\t%d\t%s\t%s\t%s" % (
        m.partition(), m.offset(), h.get("job", b"").decode(), h.get("line", b"").decode(),
        (m.value() or b"").decode("utf-8", "replace").replace("\t", "\\t").replace("\n", "\\n")))
    if with_headers:
        rest = {k: v.decode("utf-8", "replace") for k, v in h.items() if k not in ("job", "line")}
        out.write("\t" + json.dumps(rest))
    out.write("\n")
c.close()
