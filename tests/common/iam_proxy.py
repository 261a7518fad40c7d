"""An S3 front for moto's IAM enforcement. moto decides whether a request's action is
allowed by the policies of the user whose key signed it, but reads the signature only
from an `Authorization` header, and tvm-upload presigns its S3 requests (the signature
in the query). This proxy takes each presigned request, checks its signature with
botocore (a wrong one is answered 403 SignatureDoesNotMatch, as S3 would), and sends
the same request on to moto signed in the header with the same key: moto then checks
the signature again and decides on the action, with the policy the test gave the key.

  iam_proxy.py PORT UPSTREAM_URL KEY_ID SECRET [lose-first-create]

Answers pass back as they come (status, headers, body). With `lose-first-create` the
answer to the first CreateMultipartUpload is lost (the upload made, the connection closed
with no answer), as a dropped link would. Prints "ready" once listening.
"""
import http.client
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sigv4_oracle  # noqa: E402  (the suite's SigV4 oracle, beside this file)

PORT, UPSTREAM, KEY_ID, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
UP = urlsplit(UPSTREAM)
LOSE = {"create": len(sys.argv) > 5 and sys.argv[5] == "lose-first-create"}
LOCK = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def presigned_ok(method, host, target, headers):
    """Whether the query signature is the one botocore makes for this request (the SigV4
    oracle's check); with the region, the request's own query and its path."""
    path, _, query = target.partition("?")
    amz = {k: v for k, v in parse_qsl(query, keep_blank_values=True) if k.startswith("X-Amz-")}
    if "X-Amz-Signature" not in amz or amz.get("X-Amz-Credential", "").split("/")[0] != KEY_ID:
        return False
    r = {"method": method, "host": host, "target": target, "headers": headers}
    checked = sigv4_oracle.resign(KEY_ID, SECRET, r)
    own = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-"))
    region = amz["X-Amz-Credential"].split("/")[2]
    return checked["sent"] == checked["botocore"], region, own, path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def relay(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        checked = presigned_ok(self.command, headers.get("host", ""), self.path, headers)
        if not checked or not checked[0]:
            return self.answer(403, {"content-type": "application/xml"},
                               b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
        _, region, own, path = checked
        target = path + (f"?{own}" if own else "")
        url = f"{UPSTREAM}{target}"
        keep = {k: v for k, v in headers.items() if k not in HOP and not k.startswith("x-amz-date")}
        request = AWSRequest(method=self.command, url=url, data=body, headers=dict(keep))
        auth = botocore.auth.S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", region)
        auth.add_auth(request)
        conn = http.client.HTTPConnection(UP.hostname, UP.port, timeout=60)
        send = dict(request.headers.items())
        send["content-length"] = str(len(body))
        conn.request(self.command, target, body=body, headers=send)
        resp = conn.getresponse()
        data = resp.read()
        out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP}
        conn.close()
        if self.command == "POST" and own in ("uploads", "uploads="):
            with LOCK:
                lose, LOSE["create"] = LOSE["create"], False
            if lose:
                self.close_connection = True
                return
        self.answer(resp.status, out, data)

    def answer(self, status, headers, data):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay


def main():
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
