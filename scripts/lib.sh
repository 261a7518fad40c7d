# Shared by the demo and benchmark scripts: a free loopback port and a running s3s-fs.
# Source it; it defines functions only.

# A free TCP port on 127.0.0.1 below 32768 (the ephemeral range starts above).
free_port() {
  python3 -c 'import random, socket
for _ in range(500):
    p = random.randint(20000, 32000); s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: s.close()'
}

# start_s3s ROOT PORT KEY SECRET: starts s3s-fs from the tools cache in the background,
# waits until it listens, and sets S3S_PID. The caller stops it (kill "$S3S_PID").
start_s3s() {
  local root=$1 port=$2 key=$3 secret=$4
  local tools
  tools=$(bash "$(dirname "${BASH_SOURCE[0]}")/test-tools.sh" --s3s-only | tail -n 1)
  "$tools/bin/s3s-fs" --host 127.0.0.1 --port "$port" --access-key "$key" --secret-key "$secret" "$root" \
    >"$root/../s3s-fs.log" 2>&1 &
  S3S_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "s3s-fs did not start on port $port" >&2
  return 1
}
