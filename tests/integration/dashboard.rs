//! `deploy/grafana/flare-launcher.json` against a real worker's metrics: every
//! metric a panel queries is one the worker serves, with the suffix its type
//! gives (`_total` for a counter, `_bucket`, `_sum` or `_count` for a
//! histogram, none for a gauge), and every label a query groups or filters by
//! is one of that metric's labels. The metrics are those a real worker serves
//! after real jobs, and, for the families no process worker fills (API
//! requests, adoptions, departures), those the library encodes once each is
//! counted: an empty family is not shown at all.

use crate::common::probe::get;
use crate::common::system::{System, sh};
use flare_launcher::observe::Metrics;
use flare_launcher::observe::metrics::{Adopted, Now};
use flare_launcher::protocol::{BackendKind, JobRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The metrics of a worker that has counted one of everything.
fn every_family_counted() -> String {
    let metrics = Metrics::new(4);
    let record: JobRecord = serde_json::from_value(serde_json::json!({
        "job_id": "j", "state": "failed", "return_code": 1, "exit_code": 3,
        "reason": null, "message": null, "worker": "w", "backend": "docker", "site": null,
        "seq": 3, "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:01Z",
    }))
    .expect("a record");
    metrics.job_event(&record);
    metrics.adopted(Some(BackendKind::Docker), Adopted::Followed);
    metrics.launch_failed(BackendKind::Docker, "image_not_found");
    metrics.launched_in(BackendKind::Docker, Duration::from_millis(80));
    metrics.ended_in(BackendKind::Docker, Duration::from_millis(2));
    metrics.departed(false);
    metrics.api_calls("docker").count("inspect_container", true);
    metrics.render(Now {
        running: 1,
        lease_held: true,
        gpus_held: 0,
        gpus_free: 1,
        nats_connects: 1,
    })
}

/// Every query of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/flare-launcher.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    let variable = &dashboard["templating"]["list"][1]["definition"];
    queries.push(variable.as_str().expect("the instance variable").to_owned());
    queries
}

/// The metric names in `query`: the words that start with the prefix.
fn metric_names(query: &str) -> Vec<&str> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("flare_launcher_"))
        .collect()
}

/// The labels `query` groups by (`by (a, b)`) or matches (`{a="x", b=~"y"}`),
/// but for Prometheus's own (`le` of a histogram, `instance`).
fn labels_used(query: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for (open, close) in [("by (", ')'), ("{", '}')] {
        for part in query.split(open).skip(1) {
            let inside = part.split(close).next().unwrap_or_default();
            for item in inside.split(',') {
                let name = item
                    .split(['=', '!', '~'])
                    .next()
                    .unwrap_or_default()
                    .trim();
                if !name.is_empty() && !matches!(name, "le" | "instance") {
                    labels.insert(name.to_owned());
                }
            }
        }
    }
    labels
}

/// The families `/metrics` declares (`# TYPE name kind`), by name.
fn families(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// The family a sample name belongs to, if the suffix fits its kind.
fn family_of<'a>(name: &str, families: &'a BTreeMap<String, String>) -> Option<&'a str> {
    families.iter().find_map(|(family, kind)| {
        let suffix = name.strip_prefix(family.as_str())?;
        let fits = match kind.as_str() {
            "counter" => suffix == "_total",
            "histogram" => matches!(suffix, "_bucket" | "_sum" | "_count"),
            _ => suffix.is_empty(),
        };
        fits.then_some(family.as_str())
    })
}

/// The labels the samples of `family` carry in `metrics`.
fn labels_of(family: &str, metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| line.starts_with(family))
        .filter_map(|line| {
            line.split_once('{')?
                .1
                .split_once('}')
                .map(|(inside, _)| inside.to_owned())
        })
        .flat_map(|inside| {
            inside
                .split(',')
                .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_names_metrics_and_labels_the_worker_serves() {
    let system = System::start_with(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let address = system
        .worker
        .as_ref()
        .and_then(|worker| worker.probe_address())
        .expect("the worker serves metrics");
    // Samples for the labelled families a process worker fills.
    system.run(&sh("dash-ok", "exit 0")).await;
    system.run(&sh("dash-fails", "exit 3")).await;
    let mut no_program = sh("dash-no-program", "");
    no_program.command = vec!["/no/such/program".into()];
    system.run(&no_program).await;
    let (_, served) = get(address, "/metrics").await;
    let metrics = format!("{served}{}", every_family_counted());
    let declared = families(&metrics);
    // What the worker serves is what the library encodes.
    for (family, kind) in families(&served) {
        assert_eq!(declared.get(&family), Some(&kind), "{family}");
    }

    let queries = dashboard_queries();
    assert!(queries.len() > 10, "{queries:?}");
    let mut problems = Vec::new();
    for query in &queries {
        let names = metric_names(query);
        if names.is_empty() {
            problems.push(format!("no metric in {query}"));
        }
        for name in names {
            let Some(family) = family_of(name, &declared) else {
                problems.push(format!("{name} is no metric the worker serves: {query}"));
                continue;
            };
            let carried = labels_of(family, &metrics);
            // A family without samples yet (no adoption, no API request of a
            // process worker) cannot show its labels here.
            if carried.is_empty() {
                continue;
            }
            for label in labels_used(query) {
                if !carried.contains(&label) {
                    problems.push(format!("{family} has no label {label}: {query}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n{metrics}");
}

#[test]
fn the_checks_see_a_wrong_name_a_wrong_suffix_and_a_wrong_label() {
    let metrics = "# TYPE flare_launcher_jobs_ended counter\n\
        flare_launcher_jobs_ended_total{state=\"failed\",reason=\"\"} 1\n\
        # TYPE flare_launcher_launch_seconds histogram\n\
        # TYPE flare_launcher_jobs_running gauge\n";
    let families = families(metrics);
    assert_eq!(
        family_of("flare_launcher_jobs_ended_total", &families),
        Some("flare_launcher_jobs_ended")
    );
    assert_eq!(family_of("flare_launcher_jobs_ended", &families), None);
    assert_eq!(
        family_of("flare_launcher_launch_seconds_bucket", &families),
        Some("flare_launcher_launch_seconds")
    );
    assert_eq!(
        family_of("flare_launcher_jobs_running_total", &families),
        None
    );
    assert_eq!(family_of("flare_launcher_no_such", &families), None);
    let query = "sum by (state, backend) (rate(flare_launcher_jobs_ended_total{reason!=\"\",instance=~\"$instance\"}[5m]))";
    assert_eq!(metric_names(query), ["flare_launcher_jobs_ended_total"]);
    assert_eq!(
        labels_used(query),
        BTreeSet::from([
            "backend".to_owned(),
            "reason".to_owned(),
            "state".to_owned()
        ])
    );
    let carried = labels_of("flare_launcher_jobs_ended", metrics);
    assert!(!carried.contains("backend") && carried.contains("state"));
}
