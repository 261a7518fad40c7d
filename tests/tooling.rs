//! The project's own checks must be able to fail: the size budget refuses a binary past
//! 4 MiB.

use std::path::Path;
use std::process::Command;

#[test]
fn size_check_fails_past_the_four_mib_budget() {
    let dir = std::env::temp_dir().join(format!("tvm-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_size.sh");
    for (len, ok) in [(4 * 1024 * 1024, true), (4 * 1024 * 1024 + 1, false)] {
        let f = dir.join("bin");
        std::fs::write(&f, vec![0u8; len]).expect("write");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&f)
            .output()
            .expect("run");
        assert_eq!(
            out.status.success(),
            ok,
            "{len} bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
