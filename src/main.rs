//! tvm-upload: ships vehicle log files to S3 exactly once, intact.
//!
//! This file is the command line only: it turns arguments into a validated config, sets
//! up logging, runs a subcommand and maps its outcome to an exit code (SPEC.md: 0 done,
//! 1 runtime failure, 2 bad usage or invalid config). The work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use tvm_upload::config::Config;
use tvm_upload::planner::Mode;
use tvm_upload::{credentials, daemon, links, metrics, preflight, status};

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
  tvm-upload request      --config PATH --since T --until T [--source NAME]... [--note TEXT]
                                          send the files whose mtime is in the slice
                                          first, inside or outside the upload windows (T:
                                          RFC 3339, \"now\" or relative, -30m); the
                                          daemon takes it now or at its next start
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
    Request(Slice),
}

/// `request`'s arguments.
#[derive(Default)]
struct Slice {
    since: Option<String>,
    until: Option<String>,
    sources: Vec<String>,
    note: Option<String>,
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
        Command::Status { json } => match status::show(&config, json, || {
            links::Links::read_only(&config).map(|l| links::view(&l))
        }) {
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
        Command::Request(slice) => request(&config, slice),
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
    let mut flags = Flags::default();
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
            _ => flags.take(arg, &mut it)?,
        }
    }
    let command = flags.command()?;
    let config = flags
        .config
        .or_else(|| {
            std::env::var_os("TVM_UPLOAD_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Ok(Some((command, config)))
}

/// The command line's words, as they come.
#[derive(Default)]
struct Flags {
    command: Option<String>,
    config: Option<PathBuf>,
    json: bool,
    connect: bool,
    write: bool,
    vehicles: Option<String>,
    slice: Slice,
    /// Whether a flag of `request` was given.
    slice_given: bool,
}

impl Flags {
    /// Takes `arg` (and its value from `it`, for a flag that has one).
    fn take<'a>(
        &mut self,
        arg: &str,
        it: &mut impl Iterator<Item = &'a String>,
    ) -> Result<(), String> {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name {
            "--config" | "-c" => self.config = Some(PathBuf::from(value("a path")?)),
            "--vehicles" => self.vehicles = Some(value("a list")?),
            "--since" => self.slice.since = Some(value("a time")?),
            "--until" => self.slice.until = Some(value("a time")?),
            "--source" => self.slice.sources.push(value("a source name")?),
            "--note" => self.slice.note = Some(value("a text")?),
            "--json" => self.json = true,
            "--connect" => self.connect = true,
            "--write" => self.write = true,
            "run" | "once" | "check-config" | "status" | "alarms" | "dashboard" | "request"
                if self.command.is_none() =>
            {
                self.command = Some(arg.to_string());
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
        self.slice_given |= matches!(name, "--since" | "--until" | "--source" | "--note");
        Ok(())
    }

    /// The command, with its flags checked against it.
    fn command(&mut self) -> Result<Command, String> {
        let (connect, write) = (self.connect, self.write);
        let command = match self.command.as_deref() {
            None => return Err("a command is needed".to_string()),
            Some("run") => Command::Run,
            Some("once") => Command::Once,
            Some("check-config") => Command::CheckConfig { connect, write },
            Some("status") => Command::Status { json: self.json },
            Some("alarms") => Command::Alarms,
            Some("request") => Command::Request(std::mem::take(&mut self.slice)),
            Some(_) => Command::Dashboard {
                vehicles: self.vehicles.clone(),
            },
        };
        let only = |given: bool, ok: bool, what: &str| match given && !ok {
            true => Err(what.to_string()),
            false => Ok(()),
        };
        let is = |c: &Command| std::mem::discriminant(c) == std::mem::discriminant(&command);
        let dashboard = Command::Dashboard { vehicles: None };
        only(
            self.vehicles.is_some(),
            is(&dashboard),
            "--vehicles goes with dashboard",
        )?;
        only(
            self.json,
            is(&Command::Status { json: false }),
            "--json goes with status",
        )?;
        only(
            connect || write,
            is(&Command::CheckConfig { connect, write }),
            "--connect and --write go with check-config",
        )?;
        only(write, connect, "--write goes with --connect")?;
        only(
            self.slice_given,
            is(&Command::Request(Slice::default())),
            "--since, --until, --source and --note go with request",
        )?;
        if let Command::Request(s) = &command
            && (s.since.is_none() || s.until.is_none())
        {
            return Err("request needs --since and --until".to_string());
        }
        Ok(command)
    }
}

/// `request`: checks the slice against the config and leaves it in the state dir, for
/// the daemon now or at its next start.
fn request(config: &Config, slice: Slice) -> ExitCode {
    use tvm_upload::requests;
    let now_ns = tvm_upload::clock::wall_ns();
    let sources: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
    let times = (
        slice.since.as_deref().unwrap_or_default(),
        slice.until.as_deref().unwrap_or_default(),
    );
    let id = format!("local-{now_ns}");
    let origin = requests::Origin::Local;
    let checked = requests::new_request(
        id,
        times,
        slice.sources,
        slice.note,
        origin,
        &sources,
        now_ns,
    );
    let r = match checked {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tvm-upload: request: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match requests::submit(&config.state_dir, &r) {
        Ok(path) => {
            say(&format!(
                "request {}: {} (kept in {})\n",
                r.id,
                requests::fleet::describe(&r),
                path.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "tvm-upload: request: writing it into {}: {e}",
                requests::dir(&config.state_dir).display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
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
