"""The SigV4 oracle: botocore signs again each presigned request tvm-upload sent, at the
same time with the same credentials, and prints the signature botocore computes.

  sigv4_oracle.py KEY_ID SECRET < requests.json

requests.json: a list of {"method", "host", "target", "headers": {name: value}} as the
suite's proxy saw them (target: path and query as sent). Prints a JSON list of
{"sent": <X-Amz-Signature sent>, "botocore": <what botocore signs>, "target": ...}.
"""
import datetime
import json
import sys
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def resign(key_id, secret, r):
    path, _, query = r["target"].partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    amz = {k: v for k, v in params if k.startswith("X-Amz-")}
    # The request's own parameters, as sent (a bare `uploads` stays bare).
    own = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-"))
    signed = amz["X-Amz-SignedHeaders"].split(";")
    headers = {k: v for k, v in r["headers"].items() if k in signed and k != "host"}
    url = f"http://{r['host']}{path}" + (f"?{own}" if own else "")
    request = AWSRequest(method=r["method"], url=url, headers=headers)
    creds = Credentials(key_id, secret, amz.get("X-Amz-Security-Token"))
    region = amz["X-Amz-Credential"].split("/")[2]
    auth = botocore.auth.S3SigV4QueryAuth(creds, "s3", region, expires=int(amz["X-Amz-Expires"]))
    when = datetime.datetime.strptime(amz["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        auth.add_auth(request)
    mine = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
    return {"sent": amz["X-Amz-Signature"], "botocore": mine["X-Amz-Signature"],
            "target": r["target"].split("X-Amz-")[0]}


def main():
    key_id, secret = sys.argv[1], sys.argv[2]
    print(json.dumps([resign(key_id, secret, r) for r in json.load(sys.stdin)]))


if __name__ == "__main__":
    main()
