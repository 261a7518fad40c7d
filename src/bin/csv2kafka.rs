//! csv2kafka: streams CSV objects from S3 into Kafka, exactly once (SPEC-csv2kafka.md).
//! The command line only; the work is in `tvm_upload::csv2kafka`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tvm_upload::csv2kafka::config::Config;
use tvm_upload::csv2kafka::{source, worker};

const USAGE: &str = "\
csv2kafka: streams CSV objects from S3 into Kafka, one JSON message per row, exactly once

usage:
  csv2kafka run          --config PATH [--job-id ID] s3://BUCKET/KEY
  csv2kafka run          --config PATH s3://BUCKET/PREFIX/
  csv2kafka status       --config PATH (--job-id ID | s3://BUCKET/KEY) [--json]
  csv2kafka check-config --config PATH [--connect]   --connect: reach S3's table and Kafka
  csv2kafka create-table --config PATH   create the checkpoint table if missing
  csv2kafka --version | --help

exit codes: 0 every job COMPLETED (or stopped by a signal, to be resumed), 1 runtime
failure, 2 bad usage or invalid config";

#[derive(Default)]
struct Args {
    command: String,
    config: Option<PathBuf>,
    job_id: Option<String>,
    target: Option<String>,
    json: bool,
    connect: bool,
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => {
                say(&format!("{USAGE}\n"));
                return Ok(None);
            }
            "--version" | "-V" => {
                say(concat!("csv2kafka ", env!("CARGO_PKG_VERSION"), "\n"));
                return Ok(None);
            }
            "--config" => out.config = Some(it.next().ok_or("--config needs a path")?.into()),
            "--job-id" => out.job_id = Some(it.next().ok_or("--job-id needs an id")?.clone()),
            "--json" => out.json = true,
            "--connect" => out.connect = true,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s if out.command.is_empty() => out.command = s.to_string(),
            s if out.target.is_none() => out.target = Some(s.to_string()),
            s => return Err(format!("unexpected argument {s:?}")),
        }
    }
    if out.command.is_empty() {
        return Err("no command given".into());
    }
    if out.config.is_none() {
        return Err("--config PATH is required".into());
    }
    Ok(Some(out))
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csv2kafka: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(path) = args.config.as_deref() else {
        return ExitCode::from(2);
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("csv2kafka: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if matches!(args.command.as_str(), "run" | "check-config")
        && let Err(e) = tvm_upload::csv2kafka::kafka::validate(&config.kafka, config.delivery())
    {
        // An unknown or refused librdkafka property: a config mistake, found before
        // any checkpoint is touched.
        eprintln!("csv2kafka: {e}");
        return ExitCode::from(2);
    }
    let result = match args.command.as_str() {
        "run" => run(&config, &args),
        "status" => status(&config, &args),
        "check-config" => worker::check(&config, args.connect)
            .map_err(Usage)
            .map(|t| {
                say(&t);
                eprintln!("config OK");
            }),
        "create-table" => worker::create_table(&config)
            .map_err(Usage)
            .map(|t| say(&t)),
        other => {
            eprintln!("csv2kafka: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Usage(e)) if e.starts_with("usage: ") => {
            eprintln!("csv2kafka: {}", &e[7..]);
            ExitCode::from(2)
        }
        Err(Usage(e)) => {
            log::error!("{e}");
            eprintln!("csv2kafka: {e}");
            ExitCode::from(1)
        }
    }
}

/// An error message; one starting `usage: ` exits 2.
struct Usage(String);

impl From<String> for Usage {
    fn from(s: String) -> Usage {
        Usage(s)
    }
}

fn run(config: &Config, args: &Args) -> Result<(), Usage> {
    let target = args
        .target
        .as_deref()
        .ok_or_else(|| "usage: run needs s3://BUCKET/KEY or s3://BUCKET/PREFIX/".to_string())?;
    if source::parse_url(target).is_none() {
        return Err(format!("usage: {target:?} is not an s3://BUCKET/KEY URL").into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let done = worker::run(config, target, args.job_id.as_deref(), &stop)?;
    if !done && stop.load(Ordering::Relaxed) {
        log::info!("stopped by a signal; a later run resumes");
    }
    Ok(())
}

fn status(config: &Config, args: &Args) -> Result<(), Usage> {
    let job_id = match (&args.job_id, &args.target) {
        (Some(id), _) => id.clone(),
        (None, Some(t)) => {
            let (b, k) = source::parse_url(t)
                .ok_or_else(|| format!("usage: {t:?} is not an s3://BUCKET/KEY URL"))?;
            format!("{b}/{k}")
        }
        (None, None) => {
            return Err("usage: status needs --job-id ID or s3://BUCKET/KEY"
                .to_string()
                .into());
        }
    };
    let text = worker::status(config, &job_id, args.json)?;
    say(&text);
    Ok(())
}

fn init_logging(config: &Config) {
    use simplelog::{ConfigBuilder, LevelFilter, WriteLogger};
    let log_config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_ignore_str("ureq")
        .add_filter_ignore_str("rustls")
        .add_filter_ignore_str("rdkafka")
        .build();
    let _ = WriteLogger::init(config.log_level, log_config, std::io::stderr());
}
