//! `fjord dev` as a new user meets it: the printed `export` lines make the
//! printed `fjord ctl`, `fjord join` and `fjord loadgen` commands work as
//! they are, over TLS with the dev CA; without them `fjord ctl` says which
//! flag or variable is missing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this test started.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` in bash after the export lines `fjord dev` printed.
fn sh(exports: &str, script: &str) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -e\n{exports}\n{script}"))
        .env_remove("FJORD_CA")
        .env_remove("FJORD_CERT")
        .env_remove("FJORD_KEY")
        .env_remove("FJORD_ENDPOINTS")
        .output()
        .expect("run bash")
}

#[test]
fn the_printed_exports_make_the_printed_commands_work_and_ctl_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(FJORD)
        .args([
            "dev",
            "--base-port",
            "17101",
            "--metrics-listen",
            "127.0.0.1:17199",
            // A stall of a loaded machine must not look like a dead node
            // (its sessions would end as failures).
            "--node-lease-ms",
            "4000",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("FJORD_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("dev.log")).unwrap())
        .spawn()
        .expect("spawn fjord dev");
    let stdout = child.stdout.take().unwrap();
    let dev = Dev(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("Stop with Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let exports: String = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("export "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert!(
        exports.contains("FJORD_CA=") && exports.contains("PATH="),
        "no export lines in {lines:#?}"
    );
    let printed = |prefix: &str| {
        lines
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {lines:#?}"))
            .split("   #")
            .next()
            .unwrap()
            .to_string()
    };

    // The ctl lines as printed, with `fjord` found on the PATH the exports set.
    for cmd in [
        printed("fjord ctl cluster status"),
        printed("fjord ctl node list"),
        printed("fjord ctl meeting schedule --institution uio"),
        printed("fjord ctl licence get uio"),
        // A host with a token from the dev identity provider, then its account.
        printed("fjord ctl meeting schedule --institution uio --participants 40 --id-token"),
        printed("fjord ctl account list --institution uio"),
    ] {
        let out = sh(&exports, &cmd);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The host who signed in has an account now, under a pseudonymous id.
    let accounts = sh(
        &exports,
        &printed("fjord ctl account list --institution uio"),
    );
    let accounts = String::from_utf8_lossy(&accounts.stdout);
    assert!(
        accounts.contains("acct-") && accounts.contains("staff") && !accounts.contains("staff-1"),
        "{accounts}"
    );
    // The participant's join link and the host's line, as printed, for a
    // few seconds each: both get into the sample meeting.
    let host = printed("fjord join --meeting");
    let guest = printed("fjord join --link");
    let out = sh(
        &exports,
        &format!("{host} --duration-s 4 & {guest} --duration-s 3 -o json; wait"),
    );
    assert!(
        out.status.success(),
        "join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("join -o json");
    assert!(
        stats["received"].as_u64().unwrap_or(0) > 0,
        "the guest received nothing: {stats}"
    );
    // Their time is in the ledger (the nodes report within a flush), and
    // the licence's export reads as CSV.
    let usage_cmd = printed("fjord ctl usage show --institution uio");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = sh(
            &exports,
            &usage_cmd.replacen("fjord ctl", "fjord ctl -o json", 1),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let u: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let closed = u["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["end"] == "left")
            .count();
        if closed >= 2 && u["participant_seconds"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "usage not in the ledger: {u}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = sh(
        &exports,
        &printed("fjord ctl billing export --institution uio"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.starts_with("institution,period_first,period_last,revision,") && csv.contains("uio,"),
        "{csv}"
    );
    // The dashboard's printed links, and the same figures through ctl: the
    // joins above count for uio's join-success SLI.
    let printed_link = |label: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("{label} not printed"))
            .to_string()
    };
    assert!(printed_link("all institutions:").starts_with("https://127.0.0.1:17180/sla?link="));
    assert!(printed_link("uio:").starts_with("https://127.0.0.1:17180/sla/uio?link="));
    let out = sh(&exports, "fjord ctl -o json sla status --institution uio");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sla: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let joins = sla[0]["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sli"] == "join_success")
        .unwrap()["events"]
        .as_u64()
        .unwrap();
    assert!(joins >= 2, "{sla}");
    // The metadata tier is the embedded store: nothing installed, and the
    // leader's writer keeps the outbox drained.
    let mut metadata = serde_json::Value::Null;
    for _ in 0..50 {
        let out = sh(&exports, "fjord ctl -o json metadata status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        metadata = serde_json::from_slice(&out.stdout).unwrap();
        if metadata["status"]["outbox_depth"] == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let m = &metadata["status"];
    assert_eq!(m["backend"], "embedded", "{metadata}");
    assert_eq!(m["leader"], true, "{metadata}");
    assert_eq!(m["outbox_depth"], 0, "{metadata}");
    assert!(m["synced_total"].as_u64().unwrap() > 0, "{metadata}");
    let load = printed("Or load it: fjord loadgen")
        .trim_start_matches("Or load it: ")
        .replace("--duration-s 10", "--duration-s 2");
    let out = sh(&exports, &format!("{load} -o json"));
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A webinar: the panelist sends, 20 attendees receive.
    let out = sh(
        &exports,
        "fjord loadgen --institution uio --webinar --attendees 20 --duration-s 2 -o json",
    );
    assert!(
        out.status.success(),
        "loadgen --webinar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loadgen -o json");
    assert_eq!(report["kind"], "webinar", "{report}");
    assert_eq!(report["participants"], 21, "{report}");
    assert!(
        report["packets_received"].as_u64().unwrap_or(0) > 0
            && report["loss_ratio"].as_f64().unwrap_or(1.0) < 0.05,
        "{report}"
    );

    // The operations port: metrics, liveness and readiness.
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:17199").unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/healthz").contains(" 200 "));
    let ready = get("/readyz");
    assert!(ready.contains(" 200 "), "{ready}");
    let metrics = get("/metrics");
    assert!(metrics.contains("fjord_raft_term"), "{metrics}");

    // Without the exports: ctl names what is missing, exit 2.
    let path_only = exports
        .lines()
        .filter(|l| l.contains("PATH="))
        .collect::<Vec<_>>()
        .join("\n");
    let out = sh(
        &path_only,
        "fjord ctl --endpoints 127.0.0.1:17101 node list",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca") && err.contains("FJORD_CA"), "{err}");
    let ca_only = format!(
        "{path_only}\nexport {}",
        exports
            .split_whitespace()
            .find(|w| w.starts_with("FJORD_CA="))
            .unwrap()
    );
    let out = sh(&ca_only, "fjord ctl --endpoints 127.0.0.1:17101 node list");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cert") && err.contains("FJORD_CERT"),
        "{err}"
    );
    drop(dev);
    // A normal start (replicas coming up one after another, electing,
    // nodes registering) and the commands above log no error.
    let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""level":"ERROR""#))
        .collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
    assert!(log.contains(r#""level":"INFO""#), "no log captured");
}
