//! A small DynamoDB client (JSON 1.0 protocol, SigV4 header signing) for the checkpoint
//! table: GetItem, conditional UpdateItem, DescribeTable and CreateTable. Errors carry
//! DynamoDB's own type (`ConditionalCheckFailedException`, `ResourceNotFoundException`)
//! so callers can tell a lost lease from a missing table.

use serde_json::{Value, json};

use crate::credentials::Provider;

#[derive(Debug, Clone, PartialEq)]
pub enum DynamoError {
    /// No answer: connection, DNS, TLS, timeout.
    Transport(String),
    /// DynamoDB's error type (the part after `#`) and message.
    Service {
        status: u16,
        kind: String,
        message: String,
    },
}

impl DynamoError {
    pub fn is(&self, kind: &str) -> bool {
        matches!(self, DynamoError::Service { kind: k, .. } if k == kind)
    }

    pub fn condition_failed(&self) -> bool {
        self.is("ConditionalCheckFailedException")
    }

    /// Worth trying again: no answer, throttling or a server error.
    pub fn transient(&self) -> bool {
        match self {
            DynamoError::Transport(_) => true,
            DynamoError::Service { status, kind, .. } => {
                *status >= 500
                    || kind.contains("Throughput")
                    || kind == "ThrottlingException"
                    || kind == "RequestLimitExceeded"
            }
        }
    }
}

impl std::fmt::Display for DynamoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DynamoError::Transport(e) => write!(f, "DynamoDB unreachable: {e}"),
            DynamoError::Service {
                status,
                kind,
                message,
            } => write!(f, "DynamoDB HTTP {status} {kind}: {message}"),
        }
    }
}

pub struct Dynamo {
    client: crate::aws::Client,
}

impl Dynamo {
    pub fn new(endpoint: &str, region: &str, credentials: std::sync::Arc<Provider>) -> Dynamo {
        Dynamo {
            client: crate::aws::Client::new(
                endpoint,
                region,
                "dynamodb",
                concat!("csv2kafka/", env!("CARGO_PKG_VERSION")),
                credentials,
            ),
        }
    }

    /// One call of `operation` (`GetItem`, …) with `body`; the answer's JSON.
    pub fn call(&self, operation: &str, body: &Value) -> Result<Value, DynamoError> {
        let headers = [
            (
                "content-type".to_string(),
                "application/x-amz-json-1.0".to_string(),
            ),
            (
                "x-amz-target".to_string(),
                format!("DynamoDB_20120810.{operation}"),
            ),
        ];
        let (status, text) = self
            .client
            .post(&headers, body.to_string().as_bytes())
            .map_err(DynamoError::Transport)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let kind = value["__type"]
            .as_str()
            .unwrap_or("")
            .rsplit('#')
            .next()
            .unwrap_or("")
            .to_string();
        let message = value["message"]
            .as_str()
            .or_else(|| value["Message"].as_str())
            .unwrap_or(&text)
            .to_string();
        Err(DynamoError::Service {
            status,
            kind,
            message,
        })
    }

    /// The item with hash key `job_id`, as plain JSON (see [`plain`]), if any.
    pub fn get(&self, table: &str, job_id: &str) -> Result<Option<Value>, DynamoError> {
        let answer = self.call(
            "GetItem",
            &json!({"TableName": table, "Key": {"job_id": {"S": job_id}}, "ConsistentRead": true}),
        )?;
        Ok(answer.get("Item").map(plain))
    }

    /// Whether the table exists and is usable.
    pub fn describe(&self, table: &str) -> Result<String, DynamoError> {
        let answer = self.call("DescribeTable", &json!({"TableName": table}))?;
        Ok(answer["Table"]["TableStatus"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .to_string())
    }

    /// Creates the checkpoint table (on-demand billing, hash key `job_id`).
    pub fn create_table(&self, table: &str) -> Result<(), DynamoError> {
        self.call(
            "CreateTable",
            &json!({
                "TableName": table,
                "AttributeDefinitions": [{"AttributeName": "job_id", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST"
            }),
        )
        .map(|_| ())
    }
}

/// DynamoDB's typed attribute values (`{"S": "x"}`, `{"N": "1"}`) as plain JSON.
pub fn plain(item: &Value) -> Value {
    let Some(map) = item.as_object() else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        let value = if let Some(s) = v.get("S") {
            s.clone()
        } else if let Some(n) = v.get("N").and_then(Value::as_str) {
            n.parse::<i64>()
                .map(Value::from)
                .or_else(|_| n.parse::<f64>().map(Value::from))
                .unwrap_or(Value::Null)
        } else if let Some(b) = v.get("BOOL") {
            b.clone()
        } else {
            Value::Null
        };
        out.insert(k.clone(), value);
    }
    Value::Object(out)
}

/// A typed attribute value for `v`.
pub fn typed(v: &Value) -> Value {
    match v {
        Value::String(s) => json!({"S": s}),
        Value::Number(n) => json!({"N": n.to_string()}),
        Value::Bool(b) => json!({"BOOL": b}),
        _ => json!({"NULL": true}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_round_trip() {
        let item = json!({"a": "x", "n": 12, "f": 1.5, "b": true});
        let typed_item: serde_json::Map<String, Value> = item
            .as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| (k.clone(), typed(v)))
            .collect();
        assert_eq!(plain(&Value::Object(typed_item)), item);
    }

    #[test]
    fn errors_are_told_apart() {
        let e = DynamoError::Service {
            status: 400,
            kind: "ConditionalCheckFailedException".into(),
            message: "m".into(),
        };
        assert!(e.condition_failed() && !e.transient());
        assert!(DynamoError::Transport("x".into()).transient());
        let t = DynamoError::Service {
            status: 400,
            kind: "ProvisionedThroughputExceededException".into(),
            message: String::new(),
        };
        assert!(t.transient());
    }
}
