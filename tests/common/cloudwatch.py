"""Reads back what the daemon published, with boto3 (an independent CloudWatch client,
installed with moto). Used by tests/monitoring.rs.

  cloudwatch.py ENDPOINT sum NAMESPACE METRIC VEHICLE      -> total of Sum over the last hour
  cloudwatch.py ENDPOINT alarms                            -> the alarms, as JSON
  cloudwatch.py ENDPOINT stats NAMESPACE METRIC DIM VALUE  -> {sum, count} over the last hour
  cloudwatch.py ENDPOINT dashboard NAME                    -> {body, metrics}: the dashboard's
                                                              body and every metric listed

Used by tests/monitoring.rs and tests/csv2kafka.rs (dimension JobId).
"""
import datetime
import json
import sys

import boto3

endpoint, action = sys.argv[1], sys.argv[2]
cw = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="AKIATESTKEY0000001", aws_secret_access_key="test")
if action == "sum":
    namespace, metric, vehicle = sys.argv[3:6]
    now = datetime.datetime.now(datetime.timezone.utc)
    r = cw.get_metric_statistics(
        Namespace=namespace, MetricName=metric,
        Dimensions=[{"Name": "VehicleId", "Value": vehicle}],
        StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(minutes=5),
        Period=60, Statistics=["Sum"])
    print(json.dumps(sum(d["Sum"] for d in r["Datapoints"])))
elif action == "alarms":
    keys = ["AlarmName", "MetricName", "Namespace", "Statistic", "ComparisonOperator",
            "Threshold", "Period", "EvaluationPeriods", "Dimensions"]
    alarms = cw.describe_alarms()["MetricAlarms"]
    print(json.dumps([{k: a.get(k) for k in keys} for a in alarms]))
elif action == "stats":
    namespace, metric, dim, value = sys.argv[3:7]
    now = datetime.datetime.now(datetime.timezone.utc)
    r = cw.get_metric_statistics(
        Namespace=namespace, MetricName=metric,
        Dimensions=[{"Name": dim, "Value": value}],
        StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(minutes=5),
        Period=60, Statistics=["Sum", "SampleCount"])
    print(json.dumps({"sum": sum(d["Sum"] for d in r["Datapoints"]),
                      "count": sum(d["SampleCount"] for d in r["Datapoints"])}))
elif action == "dashboard":
    body = json.loads(cw.get_dashboard(DashboardName=sys.argv[3])["DashboardBody"])
    listed = []
    for page in cw.get_paginator("list_metrics").paginate():
        for m in page["Metrics"]:
            dims = [x for d in m.get("Dimensions", []) for x in (d["Name"], d["Value"])]
            listed.append([m["Namespace"], m["MetricName"], *dims])
    print(json.dumps({"body": body, "metrics": listed}))
else:
    sys.exit(f"unknown action {action}")
