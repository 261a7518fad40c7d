//! tvm-upload: ships vehicle log files to S3 exactly once, intact.
//!
//! The library holds everything; `src/main.rs` is the command line only. Modules are
//! flat and named after the nouns of the domain (see ARCHITECTURE.md for the codemap):
//! the pure core (`planner`, `journal` replay, `schedule`, `retry`, `key`, `pattern`,
//! `sigv4`) takes time and input as arguments; the threads (`daemon`, `watch`,
//! `upload`, `disk`, `metrics`) only do IO and pass messages.
//!
//! The only `unsafe` code is two libc calls (`poll` in `watch`, `statvfs` in `disk`),
//! each allowed by name and explained where it stands.

#![deny(unsafe_code)]

pub mod aws;
pub mod calendar;
pub mod clock;
pub mod compress;
pub mod config;
pub mod credentials;
#[cfg(feature = "csv2kafka")]
pub mod csv2kafka;
pub mod daemon;
pub mod dashboard;
pub mod digest;
pub mod disk;
pub mod file;
pub mod human;
pub mod journal;
pub mod key;
pub mod knobs;
pub mod limits;
pub mod link_rules;
pub mod links;
pub mod logfile;
pub mod metrics;
pub mod openfiles;
pub mod pattern;
pub mod planner;
pub mod preflight;
pub mod probe;
pub mod redact;
pub mod requests;
pub mod resolver;
pub mod retry;
pub mod s3;
pub mod schedule;
pub mod sigv4;
pub mod slice;
pub mod status;
pub mod throttle;
pub mod tls;
pub mod upload;
pub mod watch;
