//! The Helm chart (`helm/fjord`), checked offline: `ci/check_chart.py`
//! renders it for the default, a 5-replica and a three-pool values file
//! with helm-python-sdk, validates every manifest with
//! `kubernetes-validate --strict` against Kubernetes 1.33, runs checkov's
//! Kubernetes checks (every remaining finding must be explained in the
//! chart's README) and shows that `values.schema.json` rejects a bad values
//! file. The tools live in `target/tools-venv` (`scripts/prereqs.sh`). No
//! Kubernetes API server runs here; nothing is installed anywhere.

use std::path::{Path, PathBuf};
use std::process::Command;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools_venv() -> PathBuf {
    let venv = std::env::var_os("FJORD_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target").join("tools-venv"));
    assert!(
        venv.join("bin").join("python").exists(),
        "{} has no python: run scripts/prereqs.sh",
        venv.display()
    );
    venv
}

#[test]
fn the_chart_renders_validates_passes_its_policy_checks_and_refuses_bad_values() {
    let venv = tools_venv();
    // Not a hidden directory: checkov skips those.
    let out_dir = tempfile::Builder::new()
        .prefix("fjord-chart-check")
        .tempdir()
        .unwrap();
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(venv.join("bin").join("python"))
        .arg(root().join("helm/fjord/ci/check_chart.py"))
        .arg(out_dir.path())
        .env("PATH", path)
        .output()
        .expect("run check_chart.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("bad values rejected"), "{stdout}");
    // The three renderings: 3 and 5 voters, one and three pools.
    let summary: serde_json::Value =
        serde_json::from_str(&stdout[stdout.find('{').expect("summary")..]).unwrap();
    assert_eq!(summary["default"]["kinds"]["StatefulSet"], 2, "{summary}");
    assert_eq!(
        summary["three-pools"]["kinds"]["StatefulSet"], 4,
        "{summary}"
    );
    // Five replicas, six nodes of the pool, the operator.
    assert_eq!(
        summary["five-replicas"]["kinds"]["Certificate"],
        5 + 6 + 1,
        "{summary}"
    );
    // The host-network exception is found, and explained in the README.
    for case in ["default", "five-replicas", "three-pools"] {
        let findings = summary[case]["checkov_findings"].to_string();
        assert!(findings.contains("CKV_K8S_19"), "{case}: {findings}");
    }
    let five = std::fs::read_to_string(
        out_dir
            .path()
            .join("five-replicas/PodDisruptionBudget-fjord-cp.yaml"),
    )
    .unwrap();
    assert!(five.contains("minAvailable: 3"), "quorum of five: {five}");
    let three = std::fs::read_to_string(
        out_dir
            .path()
            .join("default/PodDisruptionBudget-fjord-cp.yaml"),
    )
    .unwrap();
    assert!(
        three.contains("minAvailable: 2"),
        "quorum of three: {three}"
    );
}

#[test]
fn the_charts_slo_rules_are_what_fjord_sla_rules_prints() {
    let out = Command::new(FJORD)
        .args(["sla", "rules"])
        .output()
        .expect("fjord sla rules");
    assert!(out.status.success());
    let shipped =
        std::fs::read(Path::new(&root()).join("helm/fjord/files/sla-rules.yaml")).unwrap();
    assert!(
        out.stdout == shipped,
        "helm/fjord/files/sla-rules.yaml differs from `fjord sla rules`: regenerate it with \
         `fjord sla rules --out helm/fjord/files/sla-rules.yaml`"
    );
}
