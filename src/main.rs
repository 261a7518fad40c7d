//! tvm-upload: ships vehicle log files to S3 exactly once, intact.
//!
//! This file is the command line only: it turns arguments into a validated config, sets
//! up logging, runs a subcommand and maps its outcome to an exit code (SPEC.md: 0 done,
//! 1 runtime failure, 2 bad usage or invalid config). The work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use tvm_upload::config::Config;
use tvm_upload::planner::Mode;
use tvm_upload::{credentials, daemon, metrics, preflight, status};

const USAGE: &str = "\
tvm-upload: ships vehicle log files to Amazon S3, exactly once, intact

usage:
  tvm-upload run          --config PATH   run the daemon in the foreground
  tvm-upload once         --config PATH   upload everything stable now, exit when idle
  tvm-upload check-config --config PATH [--connect [--write]]
                                          validate and check what run needs here; print
                                          the effective config. --connect also asks S3
                                          (and CloudWatch); --write puts and deletes a
                                          small object under the vehicle's prefix
  tvm-upload status       --config PATH [--json]   what is pending, in flight, done
  tvm-upload alarms       --config PATH   create or update the CloudWatch alarms
  tvm-upload dashboard    --config PATH [--vehicles V1,V2...]
                                          create or update the fleet's CloudWatch
                                          dashboard (default: this config's vehicle)
  tvm-upload --version | --help

--config may be left out when TVM_UPLOAD_CONFIG is set; the default is
/etc/tvm-upload/config.json.
exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid config";

const DEFAULT_CONFIG: &str = "/etc/tvm-upload/config.json";

enum Command {
    Run,
    Once,
    CheckConfig { connect: bool, write: bool },
    Status { json: bool },
    Alarms,
    Dashboard { vehicles: Option<String> },
}

/// Exit codes of SPEC.md.
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, config_path) = match parse_args(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tvm-upload: {msg}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tvm-upload: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::CheckConfig { connect, write } => check_config(&config, connect, write),
        Command::Status { json } => match status::show(&config, json) {
            Ok(text) => {
                say(&text);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tvm-upload: status: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Command::Alarms => alarms(&config),
        Command::Dashboard { vehicles } => dashboard(&config, vehicles.as_deref()),
        Command::Run | Command::Once => {
            if let Err(e) = init_logging(&config) {
                eprintln!("tvm-upload: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
            let mode = if matches!(command, Command::Run) {
                Mode::Run
            } else {
                Mode::Once
            };
            log::info!(
                "tvm-upload {} starting ({:?}) for vehicle {}",
                env!("CARGO_PKG_VERSION"),
                mode,
                config.vehicle_id
            );
            match daemon::run(config, mode) {
                Ok(summary)
                    if mode == Mode::Once
                        && summary.totals.given_up + summary.totals.quarantined > 0 =>
                {
                    let t = summary.totals;
                    log::error!(
                        "{} files could not be uploaded this run ({} given up, {} quarantined); \
                         each stays queued and is tried again at the next run",
                        t.given_up + t.quarantined,
                        t.given_up,
                        t.quarantined
                    );
                    ExitCode::from(EXIT_FAILURE)
                }
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    eprintln!("tvm-upload: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

/// Parses the command line. `Ok(None)`: help or version was printed.
fn parse_args(args: &[String]) -> Result<Option<(Command, PathBuf)>, String> {
    let mut command = None;
    let mut config = None;
    let (mut json, mut connect, mut write) = (false, false, false);
    let mut vehicles = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => {
                say(&format!("{USAGE}\n"));
                return Ok(None);
            }
            "-V" | "--version" => {
                say(&format!("tvm-upload {}\n", env!("CARGO_PKG_VERSION")));
                return Ok(None);
            }
            "--config" | "-c" => {
                config = Some(PathBuf::from(it.next().ok_or("--config needs a path")?));
            }
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]))
            }
            "--vehicles" => {
                vehicles = Some(it.next().ok_or("--vehicles needs a list")?.clone());
            }
            s if s.starts_with("--vehicles=") => {
                vehicles = Some(s["--vehicles=".len()..].to_string())
            }
            "--json" => json = true,
            "--connect" => connect = true,
            "--write" => write = true,
            "run" | "once" | "check-config" | "status" | "alarms" | "dashboard"
                if command.is_none() =>
            {
                command = Some(arg.clone());
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let command = match command.as_deref() {
        None => return Err("a command is needed".to_string()),
        Some("run") => Command::Run,
        Some("once") => Command::Once,
        Some("check-config") => Command::CheckConfig { connect, write },
        Some("status") => Command::Status { json },
        Some("alarms") => Command::Alarms,
        Some(_) => Command::Dashboard {
            vehicles: vehicles.clone(),
        },
    };
    if vehicles.is_some() && !matches!(command, Command::Dashboard { .. }) {
        return Err("--vehicles goes with dashboard".to_string());
    }
    if json && !matches!(command, Command::Status { .. }) {
        return Err("--json goes with status".to_string());
    }
    if (connect || write) && !matches!(command, Command::CheckConfig { .. }) {
        return Err("--connect and --write go with check-config".to_string());
    }
    if write && !connect {
        return Err("--write goes with --connect".to_string());
    }
    let config = config
        .or_else(|| {
            std::env::var_os("TVM_UPLOAD_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Ok(Some((command, config)))
}

/// Validates what `run` needs on this machine (and with `connect`, from S3 and
/// CloudWatch), a line each on stderr; prints the effective config when all pass.
fn check_config(config: &Config, connect: bool, write: bool) -> ExitCode {
    let mut checks = preflight::local(config);
    if connect {
        checks.extend(preflight::connect(config, write));
    }
    for c in &checks {
        eprintln!("{c}");
    }
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| c.verdict == preflight::Verdict::Failed)
        .collect();
    if !failed.is_empty() {
        for c in &failed {
            eprintln!("tvm-upload: config field `{}`: {}", c.field, c.detail);
        }
        return ExitCode::from(EXIT_USAGE);
    }
    let creds = credentials::describe_chain(
        config.credentials_profile.as_deref(),
        config.credentials_iot.as_ref(),
    );
    match serde_json::to_string_pretty(&config.to_json(creds)) {
        Ok(text) => {
            say(&format!("{text}\n"));
            eprintln!("config OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tvm-upload: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A CloudWatch client with the credentials chain, or the exit code of why not (named).
fn cloudwatch(
    config: &Config,
    m: &tvm_upload::config::MetricsConfig,
) -> Result<metrics::CloudWatch, ExitCode> {
    match credentials::Provider::resolve(
        config.credentials_profile.as_deref(),
        config.credentials_iot.as_ref(),
    ) {
        Ok(creds) => Ok(metrics::CloudWatch::new(m, creds)),
        Err(e) => {
            eprintln!("tvm-upload: {e}");
            Err(ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// Creates or updates the fleet's dashboard (see `tvm_upload::dashboard`).
fn dashboard(config: &Config, vehicles: Option<&str>) -> ExitCode {
    let Some(m) = &config.metrics else {
        eprintln!(
            "tvm-upload: config field `metrics`: absent or disabled; the dashboard draws the metrics"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let vehicles = match tvm_upload::dashboard::vehicles(vehicles, &config.vehicle_id) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tvm-upload: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let client = match cloudwatch(config, m) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let name = tvm_upload::dashboard::name(&m.namespace);
    let body = tvm_upload::dashboard::body(config, m, &vehicles);
    let widgets = body["widgets"].as_array().map_or(0, Vec::len);
    let form = tvm_upload::dashboard::put_form(&name, &body);
    match client.call(&form) {
        Ok(_) => {
            say(&format!(
                "dashboard {name}: {widgets} graphs of {} vehicles in {}: ok\n",
                vehicles.len(),
                m.region
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tvm-upload: dashboard {name}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Creates or updates the configured alarms. PutMetricAlarm replaces an alarm of the
/// same name, so running this twice changes nothing.
fn alarms(config: &Config) -> ExitCode {
    let Some(m) = &config.metrics else {
        eprintln!(
            "tvm-upload: config field `metrics`: absent or disabled; alarms need metrics enabled"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    if m.alarms.is_empty() {
        eprintln!("tvm-upload: config field `metrics.alarms`: none configured");
        return ExitCode::from(EXIT_USAGE);
    }
    let client = match cloudwatch(config, m) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut failed = false;
    for a in &m.alarms {
        let name = format!("{}-{}", config.vehicle_id, a.name);
        match client.call(&metrics::alarm_body(&m.namespace, &config.vehicle_id, a)) {
            Ok(_) => say(&format!(
                "alarm {name}: {} {} {} {} over {}s x{}: ok\n",
                a.metric,
                a.statistic,
                a.comparison,
                a.threshold,
                a.period_seconds,
                a.evaluation_periods
            )),
            Err(e) => {
                eprintln!("tvm-upload: alarm {name}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes to stdout. A reader that went away (`| head -1`) is not an error of ours: the
/// rest is dropped quietly instead of panicking as `println!` does.
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ = writeln!(std::io::stderr(), "tvm-upload: writing to stdout: {e}");
    }
}

fn init_logging(config: &Config) -> Result<(), String> {
    use simplelog::{ConfigBuilder, LevelFilter, WriteLogger};
    let log_config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        // HTTP and TLS libraries log request URIs at debug level, and a presigned URI
        // carries its signature: their logs never reach ours.
        .add_filter_ignore_str("ureq")
        .add_filter_ignore_str("rustls")
        .build();
    let result = match &config.log.file {
        None => WriteLogger::init(config.log.level, log_config, std::io::stderr()),
        Some(path) => {
            let file =
                tvm_upload::logfile::LogFile::open(path, config.log.max_bytes, config.log.keep)
                    .map_err(|e| format!("log.file {}: {e}", path.display()))?;
            WriteLogger::init(config.log.level, log_config, file)
        }
    };
    result.map_err(|e| format!("logging: {e}"))
}
