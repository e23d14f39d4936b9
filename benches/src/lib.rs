//! Shared helpers for Fjord's benchmark programs and its real-process
//! tests: starting `fjord control-plane`, `fjord media-node` and `etcd`
//! processes on loopback, and percentiles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Percentile of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A child process that is killed when dropped.
pub struct Proc(pub Option<Child>);

impl Proc {
    /// The running process (panics once it was killed here).
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("process already killed")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct FjordCluster {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub addrs: Vec<String>,
    pub peers: String,
    pub procs: Vec<Proc>,
}

impl FjordCluster {
    pub fn start(bin: &Path, dir: &Path) -> FjordCluster {
        let addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = FjordCluster {
            bin: bin.into(),
            dir: dir.into(),
            addrs,
            peers,
            procs: Vec::new(),
        };
        for id in 1..=3 {
            let p = c.spawn(id);
            c.procs.push(p);
        }
        c
    }

    pub fn spawn(&self, id: usize) -> Proc {
        Proc(Some(
            Command::new(&self.bin)
                .args([
                    "control-plane",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    &self.addrs[id - 1],
                ])
                .args(["--peers", &self.peers, "--node-lease-ms", "600000"])
                .arg("--data-dir")
                .arg(self.dir.join(format!("fjord-{id}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn fjord control-plane"),
        ))
    }
}

pub struct EtcdCluster {
    pub client_urls: Vec<String>,
    pub procs: Vec<Proc>,
}

impl EtcdCluster {
    pub fn start(dir: &Path) -> EtcdCluster {
        let client: Vec<String> = (0..3)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let peer: Vec<String> = (0..3)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial = peer
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}={p}"))
            .collect::<Vec<_>>()
            .join(",");
        let procs = (0..3)
            .map(|i| {
                Proc(Some(
                    Command::new("etcd")
                        .args(["--name", &format!("e{i}")])
                        .arg("--data-dir")
                        .arg(dir.join(format!("etcd-{i}")))
                        .args([
                            "--listen-client-urls",
                            &client[i],
                            "--advertise-client-urls",
                            &client[i],
                        ])
                        .args([
                            "--listen-peer-urls",
                            &peer[i],
                            "--initial-advertise-peer-urls",
                            &peer[i],
                        ])
                        .args([
                            "--initial-cluster",
                            &initial,
                            "--initial-cluster-state",
                            "new",
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn etcd (install Debian's etcd-server)"),
                ))
            })
            .collect();
        EtcdCluster {
            client_urls: client,
            procs,
        }
    }
}

/// One `fjord control-plane` replica on loopback with the given node
/// heartbeat interval and lease; returns it and its address.
pub fn control_plane(bin: &Path, dir: &Path, heartbeat_ms: u64, lease_ms: u64) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let p = Proc(Some(
        Command::new(bin)
            .args(["control-plane", "--id", "1", "--listen", &addr])
            .args(["--peers", &format!("1={addr}")])
            .args(["--election-timeout-min-ms", "200"])
            .args(["--election-timeout-max-ms", "400"])
            .args(["--raft-heartbeat-interval-ms", "50"])
            .args(["--node-heartbeat-interval-ms", &heartbeat_ms.to_string()])
            .args(["--node-lease-ms", &lease_ms.to_string()])
            .arg("--data-dir")
            .arg(dir.join("cp"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fjord control-plane"),
    ));
    (p, addr)
}

/// A `fjord media-node` process, returned once it is registered and serving.
pub fn media_node(bin: &Path, id: &str, region: &str, cp_addr: &str, capacity: u32) -> Proc {
    use std::io::{BufRead, BufReader};
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(bin)
        .args(["media-node", "--region", region, "--id", id])
        .args(["--listen", &addr, "--control-plane", cp_addr])
        .args(["--capacity", &capacity.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fjord media-node");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    assert!(
        line.contains("listening"),
        "media node {id} did not start: {line:?}"
    );
    Proc(Some(child))
}
