"""The pipeline a user would otherwise write, for `make bench`:
`aws s3 cp s3://B/K - | python3 produce.py BOOTSTRAP TOPIC` sends each line of stdin
as one message with confluent-kafka's idempotent producer. No CSV parsing, no
checkpoints, not exactly once."""
import sys

from confluent_kafka import Producer

bootstrap, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
n = 0
for line in sys.stdin.buffer:
    while True:
        try:
            p.produce(topic, line.rstrip(b"\n"))
            break
        except BufferError:
            p.poll(0.05)
    n += 1
    if n % 10000 == 0:
        p.poll(0)
p.flush()
print(n, file=sys.stderr)
