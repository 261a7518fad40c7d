//! csv2kafka: streams CSV objects from S3 into Kafka, one JSON message per row, exactly
//! once, with DynamoDB checkpoints and leases and CloudWatch progress metrics
//! (SPEC-csv2kafka.md). Built only with the `csv2kafka` feature: the embedded daemon
//! never compiles it. It shares the S3 client, SigV4, CloudWatch, credentials and the
//! strict config reader with tvm-upload.

pub mod checkpoint;
pub mod config;
pub mod csv;
pub mod dynamo;
pub mod emitter;
pub mod job;
pub mod kafka;
pub mod lease;
pub mod msk;
pub mod saver;
pub mod scan;
pub mod source;
pub mod tls;
pub mod values;
pub mod worker;
