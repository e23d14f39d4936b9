//! Shared helpers for Fjord's benchmark programs: starting real clusters of
//! `fjord control-plane` and `etcd` processes on loopback, and percentiles.

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
