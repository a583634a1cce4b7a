//! `docs/configuration.md` (its option tables) and `deploy/config.example.toml`
//! are written from the options' declarations: this fails when either differs
//! from what the declarations give, and says how to write them again. The
//! example file must also load.

use flare_launcher::config::reference::{
    self, EXAMPLE_PATH, REFERENCE_PATH, REGENERATE, example_file, markdown, splice,
};
use flare_launcher::config::{GlobalArgs, Settings, WorkerArgs};
use std::path::{Path, PathBuf};

fn in_repository(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(in_repository(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn the_reference_and_the_example_file_match_the_declarations() {
    let mut stale = Vec::new();
    let document = read(REFERENCE_PATH);
    match splice(&document, &markdown()) {
        Some(generated) if generated == document => {}
        Some(_) => stale.push(format!(
            "{REFERENCE_PATH}: its option tables differ from the declarations"
        )),
        None => stale.push(format!(
            "{REFERENCE_PATH} lacks the markers {:?} and {:?} around its option tables",
            reference::BEGIN,
            reference::END
        )),
    }
    if read(EXAMPLE_PATH) != example_file() {
        stale.push(format!("{EXAMPLE_PATH} differs from the declarations"));
    }
    assert!(
        stale.is_empty(),
        "{}\nrun `{REGENERATE}` to write them again",
        stale.join("\n")
    );
}

#[test]
fn the_generated_example_file_loads_with_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, example_file()).unwrap();
    let global = GlobalArgs {
        config: Some(file),
        ..GlobalArgs::default()
    };
    let config = Settings::load(global, WorkerArgs::default())
        .unwrap()
        .worker_config();
    let defaults = Settings::load(GlobalArgs::default(), WorkerArgs::default())
        .unwrap()
        .worker_config();
    assert_eq!(config.max_jobs, defaults.max_jobs);
    assert_eq!(config.docker, defaults.docker);
    assert_eq!(config.k8s, defaults.k8s);
    assert_eq!(config.resources, defaults.resources);
    assert_eq!(config.nats.urls(), defaults.nats.urls());
    assert!(config.validate().is_ok());
}
