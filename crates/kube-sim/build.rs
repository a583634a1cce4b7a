//! Tells kube-sim's tests whether `kubectl` is here: without it (and outside
//! CI, `CI=true`, where every test runs) the cfg `no_kubectl` is set and the
//! kubectl tests show as ignored instead of passing without having run.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_kubectl)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=KUBE_SIM_KUBECTL");
    println!("cargo::rerun-if-env-changed=PATH");
    let program = kubectl();
    // Probed again when it changes, and at every build while it is missing.
    println!("cargo::rerun-if-changed={}", program.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        return;
    }
    let answers = Command::new(&program)
        .args(["version", "--client"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if !answers {
        println!("cargo::rustc-cfg=no_kubectl");
    }
}

/// The kubectl the tests run: `$KUBE_SIM_KUBECTL`, else `kubectl` found on the
/// `PATH` (`/usr/bin/kubectl` when it is nowhere).
fn kubectl() -> PathBuf {
    if let Some(program) = std::env::var_os("KUBE_SIM_KUBECTL") {
        return program.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kubectl"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"))
}
