//! The busybox init script (`cross/S95tvm-upload`) under busybox's own `sh` and
//! `start-stop-daemon`: it starts the daemon, a file gets uploaded, it stops cleanly
//! within the timeout, and no process is left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A directory of links to busybox applets, put first in PATH so the script gets
/// busybox's `start-stop-daemon`, `kill`, `sleep` and friends, not Debian's.
fn busybox_path(dir: &Path) -> String {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is installed by scripts/test-tools.sh");
    let shim = dir.join("busybox-bin");
    std::fs::create_dir_all(&shim).expect("mkdir");
    for applet in [
        "sh",
        "start-stop-daemon",
        "kill",
        "sleep",
        "cat",
        "rm",
        "echo",
        "[",
        "test",
    ] {
        let _ = std::os::unix::fs::symlink(&busybox, shim.join(applet));
    }
    format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn script(setup: &Setup, path: &str, verb: &str) -> Output {
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("cross/S95tvm-upload");
    Command::new(Path::new(path.split(':').next().expect("shim")).join("sh"))
        .arg(init)
        .arg(verb)
        .env_clear()
        .envs(passthrough_env())
        .env("PATH", path)
        .env("DAEMON", env!("CARGO_BIN_EXE_tvm-upload"))
        .env("CONFIG", &setup.config)
        .env("PIDFILE", setup.dir.path().join("tvm-upload.pid"))
        .env("STOP_TIMEOUT", "10")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .expect("run the init script")
}

#[test]
fn init_script_starts_uploads_stops_and_leaves_nothing_behind() {
    let server = Server::start(Kind::S3sFs);
    let log = std::env::temp_dir().join(format!("tvm-busybox-{}.log", std::process::id()));
    let setup = Setup::new(
        &server.endpoint(),
        &[("logs", "")],
        "",
        &format!(
            r#","log":{{"level":"info","file":{:?}}}"#,
            log.to_str().expect("utf8")
        ),
    );
    let path = busybox_path(setup.dir.path());
    let file = setup.source("logs").join("boot.log");
    write(&file, b"from busybox");
    age_file(&file, 3600);

    let out = script(&setup, &path, "start");
    assert!(
        out.status.success(),
        "start: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let pid: i32 = std::fs::read_to_string(setup.dir.path().join("tvm-upload.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(script(&setup, &path, "status").status.code(), Some(0));
    let client = server.client();
    wait_until(30, "the upload", || client.list().len() == 1);
    assert_eq!(
        client.get(&format!("v001/{}/logs/boot.log", mtime_date(&file))),
        b"from busybox"
    );

    let started = Instant::now();
    let out = script(&setup, &path, "stop");
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped within the timeout"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "no process left behind"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("killing"),
        "stopped by SIGTERM, not SIGKILL"
    );
    assert_eq!(script(&setup, &path, "status").status.code(), Some(3));
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(
        text.contains("signal 15: stopping") && text.contains("stopped:"),
        "{text}"
    );
    assert_no_secrets(&text);
    let _ = std::fs::remove_file(&log);
}
