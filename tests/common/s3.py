"""Reads S3 state with boto3 (an independent S3 client, installed with moto), for what
the tests' own client does not do. Used by tests/lifecycles.rs and tests/requests.rs.

  s3.py ENDPOINT uploads BUCKET [KEY_ID SECRET]
      -> the keys of multipart uploads in progress, as JSON
  s3.py ENDPOINT put-encoded BUCKET KEY FILE ENCODING KEY_ID SECRET
      -> PutObject of FILE's bytes with that Content-Encoding
  s3.py ENDPOINT checksum BUCKET KEY KEY_ID SECRET
      -> the object's CRC-32 checksum and its type as the server has them, as JSON
  s3.py ENDPOINT put-json BUCKET KEY TEXT KEY_ID SECRET
      -> PutObject of TEXT as application/json (a fleet's on-demand request)
"""
import json
import sys

import boto3

endpoint, action, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
key_id, secret = sys.argv[-2:] if len(sys.argv) > 5 else ("AKIATESTKEY0000001", "test")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
if action == "uploads":
    print(json.dumps([u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]))
elif action == "put-encoded":
    key, path, encoding = sys.argv[4:7]
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read(), ContentEncoding=encoding)
elif action == "checksum":
    h = s3.head_object(Bucket=bucket, Key=sys.argv[4], ChecksumMode="ENABLED")
    print(json.dumps({"crc32": h.get("ChecksumCRC32"), "type": h.get("ChecksumType")}))
elif action == "put-json":
    key, text = sys.argv[4:6]
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode(), ContentType="application/json")
    print("null")
else:
    sys.exit(f"unknown action {action}")
