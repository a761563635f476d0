//! Compiles the pod sandbox's pause program (pause/pause.c) into a static binary that the
//! kubelet embeds, so it can build its infra image with no registry.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.c");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("pause");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg("pause/pause.c")
        .status()
        .unwrap_or_else(|e| {
            panic!("running {cc} for pause/pause.c: {e} (install build-essential)")
        });
    assert!(
        status.success(),
        "{cc} -static failed for pause/pause.c (static glibc: libc6-dev)"
    );
}
