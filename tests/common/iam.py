"""IAM users and reads for tests/permissions.rs, against a moto server started with
INITIAL_NO_AUTH_ACTION_COUNT (its first requests unauthenticated, then every request
checked against the policies of the user whose key signed it).

  iam.py ENDPOINT setup BUCKET USERS_JSON
      USERS_JSON: {name: policy document}. Creates the bucket and, for each name, a user
      with that inline policy and an access key; then makes unauthenticated requests
      until moto refuses one (IAM is enforced from then on). Prints {name: [key, secret]}.
  iam.py ENDPOINT keys BUCKET PREFIX KEY SECRET     -> the keys under PREFIX, as JSON
  iam.py ENDPOINT get BUCKET KEY KEY SECRET         -> the object's text
  iam.py ENDPOINT put BUCKET KEY TEXT KEY SECRET    -> PutObject of TEXT
  iam.py ENDPOINT uploads BUCKET KEY SECRET         -> keys of multipart uploads in progress
  iam.py ENDPOINT metrics VEHICLE KEY SECRET        -> metric names CloudWatch lists for it
"""
import json
import sys

import boto3
from botocore.config import Config

endpoint, action = sys.argv[1], sys.argv[2]


def client(service, key="AKIASETUP0000000000", secret="setup"):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def setup(bucket, users):
    s3, iam = client("s3"), client("iam")
    s3.create_bucket(Bucket=bucket)
    keys = {}
    for name, policy in users.items():
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="tvm-upload", PolicyDocument=json.dumps(policy))
        k = iam.create_access_key(UserName=name)["AccessKey"]
        keys[name] = [k["AccessKeyId"], k["SecretAccessKey"]]
    for _ in range(1000):
        try:
            s3.list_buckets()
        except Exception:
            return keys
    sys.exit("moto never began to check requests: is INITIAL_NO_AUTH_ACTION_COUNT set?")


if action == "setup":
    print(json.dumps(setup(sys.argv[3], json.loads(sys.argv[4]))))
elif action == "keys":
    bucket, prefix, key, secret = sys.argv[3:7]
    pages = client("s3", key, secret).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    print(json.dumps([o["Key"] for p in pages for o in p.get("Contents", [])]))
elif action == "get":
    bucket, name, key, secret = sys.argv[3:7]
    print(json.dumps(client("s3", key, secret).get_object(Bucket=bucket, Key=name)["Body"].read().decode()))
elif action == "put":
    bucket, name, text, key, secret = sys.argv[3:8]
    client("s3", key, secret).put_object(Bucket=bucket, Key=name, Body=text.encode())
    print("null")
elif action == "uploads":
    bucket, key, secret = sys.argv[3:6]
    ups = client("s3", key, secret).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    print(json.dumps([u["Key"] for u in ups]))
elif action == "metrics":
    vehicle, key, secret = sys.argv[3:6]
    names = set()
    for page in client("cloudwatch", key, secret).get_paginator("list_metrics").paginate(
            Dimensions=[{"Name": "VehicleId", "Value": vehicle}]):
        names.update(m["MetricName"] for m in page["Metrics"])
    print(json.dumps(sorted(names)))
else:
    sys.exit(f"unknown action {action}")
