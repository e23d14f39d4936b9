//! `fjord sla rules` prints rules Prometheus accepts (`promtool check
//! rules`) and that alert as intended on fixed series (`promtool test
//! rules` with tests/fixtures/sla_rules_test.yml). promtool comes from
//! Debian's `prometheus` package (scripts/prereqs.sh installs it).

use std::process::Command;

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

fn promtool(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (scripts/prereqs.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn generated_rules_pass_promtool_check_and_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let out = Command::new(FJORD)
        .args(["sla", "rules", "--out"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    for alert in ["FjordSloBudgetBurnPage", "FjordSloBudgetBurnTicket"] {
        assert!(text.contains(alert), "{alert} missing");
    }
    // The factors of a 30-day window.
    for f in ["14.4 *", "(6 *", "(3 *", "(1 *"] {
        assert!(text.contains(f), "factor {f} missing");
    }
    let check = promtool(dir.path(), &["check", "rules", "rules.yml"]);
    assert!(check.contains("12 rules found"), "{check}");

    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sla_rules_test.yml"
        ),
        dir.path().join("sla_rules_test.yml"),
    )
    .unwrap();
    let test = promtool(dir.path(), &["test", "rules", "sla_rules_test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn rules_for_another_window_scale_the_factors_and_bad_input_is_refused() {
    // A 28-day window: 2 % of the budget in 1 h is 2 % x 672 h = 13.44x.
    let out = Command::new(FJORD)
        .args(["sla", "rules", "--window-days", "28"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("13.44 *"), "{text}");
    assert!(text.contains("rate28d"), "{text}");

    let out = Command::new(FJORD)
        .args(["sla", "rules", "--window-days", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("7 to 366 days"));
}
