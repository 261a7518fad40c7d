"""Local credential providers for the tests, written from AWS's documentation of each
protocol. Every answer hands out the key and secret the S3 test server checks, with a
fresh session token `tok-N-EXPIRY` (EXPIRY in Unix seconds) that expires after
`--lifetime` seconds, so a test can tell from any signed request whether its token was
valid when it was signed.

  python3 creds_server.py PORT DIR --lifetime 20 [--tls CERT KEY CLIENT_CA]

- the container endpoint (ECS, Fargate, Greengrass TES): GET /creds, `Authorization`
  must equal the text of DIR/auth (re-read per request) when that file exists;
- IMDSv2: PUT /latest/api/token, then GET /latest/meta-data/iam/security-credentials/
  and .../tvm-role with `X-aws-ec2-metadata-token`;
- the AWS IoT credentials provider: GET /role-aliases/tvm-upload/credentials with
  `x-amzn-iot-thingname`, over mutual TLS when `--tls` is given (client certificate
  required, checked against CLIENT_CA).

Each answer is counted in DIR/served (one line per credentials handed out).
"""
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCESS_KEY = os.environ.get("CREDS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")
SECRET_KEY = os.environ.get("CREDS_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
IMDS_TOKEN = "imds-session-token"
LOCK = threading.Lock()
COUNT = [0]


def creds(lifetime):
    with LOCK:
        COUNT[0] += 1
        n = COUNT[0]
    expiry = int(time.time()) + lifetime
    with open(os.path.join(DIR, "served"), "a") as f:
        f.write(f"{n} {expiry}\n")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
    return ACCESS_KEY, SECRET_KEY, f"tok-{n}-{expiry}", when


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def answer(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get(
                "X-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(200, IMDS_TOKEN, "text/plain")
        self.answer(400, "bad request", "text/plain")

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/creds":
            return self.container()
        if path.startswith("/latest/meta-data/iam/security-credentials/"):
            return self.imds(path)
        if path.startswith("/role-aliases/"):
            return self.iot(path)
        self.answer(404, "not found", "text/plain")

    def container(self):
        auth_file = os.path.join(DIR, "auth")
        if os.path.exists(auth_file):
            want = open(auth_file).read().strip()
            if self.headers.get("Authorization") != want:
                return self.answer(403, json.dumps({"Code": "Forbidden",
                                                    "Message": "authorization token refused"}))
        k, s, t, e = creds(LIFETIME)
        self.answer(200, json.dumps({"AccessKeyId": k, "SecretAccessKey": s, "Token": t,
                                     "Expiration": e, "RoleArn": "arn:aws:iam::1:role/t"}))

    def imds(self, path):
        if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
            return self.answer(401, "", "text/plain")
        role = path.rsplit("/", 1)[1]
        if not role:
            return self.answer(200, "tvm-role\n", "text/plain")
        if role != "tvm-role":
            return self.answer(404, "not found", "text/plain")
        k, s, t, e = creds(LIFETIME)
        self.answer(200, json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": k,
                                     "SecretAccessKey": s, "Token": t, "Expiration": e}))

    def iot(self, path):
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[2] != "credentials":
            return self.answer(404, "not found", "text/plain")
        if parts[1] != "tvm-upload":
            return self.answer(404, json.dumps({"message": "Role alias does not exist"}))
        if not self.headers.get("x-amzn-iot-thingname"):
            return self.answer(400, json.dumps({"message": "thing name missing"}))
        k, s, t, e = creds(LIFETIME)
        self.answer(200, json.dumps({"credentials": {
            "accessKeyId": k, "secretAccessKey": s, "sessionToken": t, "expiration": e}}))


def main():
    global DIR, LIFETIME
    port, DIR = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[3:]
    LIFETIME = int(args[args.index("--lifetime") + 1]) if "--lifetime" in args else 20
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if "--tls" in args:
        i = args.index("--tls")
        cert, key, client_ca = args[i + 1:i + 4]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
