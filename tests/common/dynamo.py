"""Reads a csv2kafka checkpoint item back with boto3 (an independent DynamoDB client).

  dynamo.py ENDPOINT TABLE JOB_ID   -> the item as plain JSON (numbers as numbers)
"""
import decimal
import json
import sys

import boto3

endpoint, table, job = sys.argv[1:4]
db = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIATESTKEY0000001", aws_secret_access_key="test")
item = db.get_item(TableName=table, Key={"job_id": {"S": job}}, ConsistentRead=True).get("Item")
if item is None:
    print("null")
    sys.exit(0)
out = {}
for k, v in item.items():
    if "S" in v:
        out[k] = v["S"]
    elif "N" in v:
        n = decimal.Decimal(v["N"])
        out[k] = int(n) if n == n.to_integral_value() else float(n)
    else:
        out[k] = list(v.values())[0]
print(json.dumps(out))
