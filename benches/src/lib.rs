//! Shared helpers for Fjord's benchmark programs and its real-process
//! tests: starting `fjord control-plane`, `fjord media-node` and `etcd`
//! processes on loopback, and percentiles.

pub mod netns;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fjord_common::pki::LocalCa;
use fjord_common::TlsFiles;

/// The CA every process of a benchmark or test run trusts, made in
/// `dir/pki` on first use.
pub fn local_ca(dir: &Path) -> LocalCa {
    LocalCa::open_or_init(&dir.join("pki")).expect("creating the test CA")
}

/// A replica's `--kek` file from [`local_ca`], as `FJORD_KEK`.
pub fn with_kek<'a>(cmd: &'a mut Command, ca: &LocalCa) -> &'a mut Command {
    cmd.env("FJORD_KEK", ca.kek().expect("key-encryption key"))
}

/// Points a `fjord` command at `files` through `FJORD_CA`, `FJORD_CERT`
/// and `FJORD_KEY`, as an operator's shell would.
pub fn with_tls<'a>(cmd: &'a mut Command, files: &TlsFiles) -> &'a mut Command {
    cmd.env("FJORD_CA", &files.ca);
    match (&files.cert, &files.key) {
        (Some(c), Some(k)) => cmd.env("FJORD_CERT", c).env("FJORD_KEY", k),
        _ => cmd.env_remove("FJORD_CERT").env_remove("FJORD_KEY"),
    }
}

/// The operator certificate tests and benchmarks administer with.
pub fn operator(ca: &LocalCa) -> TlsFiles {
    ca.operator("bench-operator").expect("operator certificate")
}

/// A loopback port free now and never handed out before by this process.
///
/// The listener that found it is closed before the caller's process binds
/// the port, and the kernel may offer the same port to the next `bind(0)`:
/// two replicas of one test, or of two tests running side by side, would
/// then race for one port, and the loser's endpoint would answer with the
/// winner's service.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
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
    pub ca: LocalCa,
    /// Public ports.
    pub addrs: Vec<String>,
    /// Peer ports.
    pub peer_addrs: Vec<String>,
    /// Prometheus `/metrics` ports.
    pub metrics_addrs: Vec<String>,
    pub peers: String,
    pub procs: Vec<Proc>,
    /// Node heartbeat and lease flags every replica starts with.
    pub node_args: Vec<String>,
    /// Flags for one replica only (index 0 is replica 1).
    pub replica_args: Vec<Vec<String>>,
}

/// What the replicas of a [`FjordCluster`] spent, summed over all three:
/// CPU (user+sys) and the log's fsyncs, appends and bytes, read from
/// `/proc` and from their `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterCost {
    pub cpu_s: f64,
    pub fsyncs: f64,
    pub appends: f64,
    pub log_bytes: f64,
}

impl ClusterCost {
    pub fn since(&self, before: &ClusterCost) -> ClusterCost {
        ClusterCost {
            cpu_s: self.cpu_s - before.cpu_s,
            fsyncs: self.fsyncs - before.fsyncs,
            appends: self.appends - before.appends,
            log_bytes: self.log_bytes - before.log_bytes,
        }
    }
}

/// User+system CPU seconds of a process so far (Linux `/proc`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// One metric's value from a Prometheus text page (summed over labels).
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET `http://addr/path` (HTTP/1.0, loopback): the body, or "" on failure.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Bytes of regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

impl FjordCluster {
    /// Three replicas whose node lease is long (benchmarks register a node
    /// that never beats).
    pub fn start(bin: &Path, dir: &Path) -> FjordCluster {
        FjordCluster::start_with(bin, dir, &["--node-lease-ms", "600000"])
    }

    /// Three replicas with these node heartbeat and lease flags.
    pub fn start_with(bin: &Path, dir: &Path, node_args: &[&str]) -> FjordCluster {
        FjordCluster::start_custom(bin, dir, node_args, vec![Vec::new(); 3])
    }

    /// [`FjordCluster::start_with`], plus flags for each replica alone.
    pub fn start_custom(
        bin: &Path,
        dir: &Path,
        node_args: &[&str],
        replica_args: Vec<Vec<String>>,
    ) -> FjordCluster {
        let addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peer_addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let metrics_addrs: Vec<String> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = peer_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = FjordCluster {
            bin: bin.into(),
            dir: dir.into(),
            ca: local_ca(dir),
            addrs,
            peer_addrs,
            metrics_addrs,
            peers,
            procs: Vec::new(),
            node_args: node_args.iter().map(|a| a.to_string()).collect(),
            replica_args,
        };
        for id in 1..=3 {
            let p = c.spawn(id);
            c.procs.push(p);
        }
        c
    }

    pub fn spawn(&self, id: usize) -> Proc {
        let tls = self.ca.replica(id as u64).expect("replica certificate");
        Proc(Some(
            with_tls(with_kek(&mut Command::new(&self.bin), &self.ca), &tls)
                .args([
                    "control-plane",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    &self.addrs[id - 1],
                    "--peer-listen",
                    &self.peer_addrs[id - 1],
                ])
                .args(["--peers", &self.peers])
                .args(&self.node_args)
                .args(self.replica_args.get(id - 1).into_iter().flatten())
                .args(["--metrics-listen", &self.metrics_addrs[id - 1]])
                .arg("--data-dir")
                .arg(self.dir.join(format!("fjord-{id}")))
                .stdout(Stdio::null())
                .stderr(replica_log(&self.dir, id))
                .spawn()
                .expect("spawn fjord control-plane"),
        ))
    }
}

/// Where replica `id` logs: a file under `FJORD_BENCH_LOG_DIR` when that
/// is set (to keep the logs of a surprising run), otherwise a file in the
/// cluster's own directory, so a failing test can show what the replicas
/// said ([`FjordCluster::log_tails`]).
fn replica_log(cluster_dir: &Path, id: usize) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(replica_log_path(cluster_dir, id))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

fn replica_log_path(cluster_dir: &Path, id: usize) -> PathBuf {
    let dir = std::env::var_os("FJORD_BENCH_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cluster_dir.to_path_buf());
    dir.join(format!("fjord-{id}.log"))
}

impl FjordCluster {
    /// The last `lines` lines each replica logged, for a failing test's
    /// message (escape sequences removed).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for id in 1..=self.addrs.len() {
            let text = std::fs::read_to_string(replica_log_path(&self.dir, id)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("---- replica {id} ----\n"));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(&strip_ansi(line));
                out.push('\n');
            }
        }
        out
    }

    /// Runs `fjord ctl ARGS` against the cluster as an operator.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        with_tls(&mut Command::new(&self.bin), &operator(&self.ca))
            .args(["ctl", "--endpoints", &self.addrs.join(",")])
            .args(args)
            .output()
            .expect("run fjord ctl")
    }

    /// `fjord ctl -o json ARGS`, which must succeed, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(
            out.status.success(),
            "fjord ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ctl -o json")
    }

    /// CPU, fsyncs, appends and log bytes of the running replicas so far.
    pub fn cost(&self) -> ClusterCost {
        let mut c = ClusterCost::default();
        for (p, m) in self.procs.iter().zip(&self.metrics_addrs) {
            if let Some(child) = &p.0 {
                c.cpu_s += cpu_seconds(child.id());
            }
            let page = http_get(m, "/metrics");
            c.fsyncs += metric_sum(&page, "fjord_raft_log_fsyncs_total");
            c.appends += metric_sum(&page, "fjord_raft_log_appends_total");
            c.log_bytes += metric_sum(&page, "fjord_raft_log_bytes_written_total");
        }
        c
    }

    /// Bytes on disk under replica `id`'s data directory.
    pub fn disk_bytes(&self, id: usize) -> u64 {
        dir_bytes(&self.dir.join(format!("fjord-{id}")))
    }
}

/// Three etcd members on loopback. With a CA, every channel is mutual TLS
/// (clients and peers), as Fjord's replicas are: a comparison of the two
/// then weighs the same encryption and handshakes on both sides.
pub struct EtcdCluster {
    pub client_urls: Vec<String>,
    pub procs: Vec<Proc>,
}

impl EtcdCluster {
    /// `ca`: mutual TLS on client and peer URLs (member `i` serves a
    /// replica certificate of id `100 + i`); `None`: plaintext.
    pub fn start(dir: &Path, ca: Option<&LocalCa>) -> EtcdCluster {
        let scheme = if ca.is_some() { "https" } else { "http" };
        let client: Vec<String> = (0..3)
            .map(|_| format!("{scheme}://127.0.0.1:{}", free_port()))
            .collect();
        let peer: Vec<String> = (0..3)
            .map(|_| format!("{scheme}://127.0.0.1:{}", free_port()))
            .collect();
        let initial = peer
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}={p}"))
            .collect::<Vec<_>>()
            .join(",");
        let procs = (0..3)
            .map(|i| {
                let mut cmd = Command::new("etcd");
                cmd.args(["--name", &format!("e{i}")])
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
                    ]);
                if let Some(ca) = ca {
                    let files = ca.replica(100 + i as u64).expect("etcd member certificate");
                    let cert = files.cert.as_ref().expect("cert");
                    let key = files.key.as_ref().expect("key");
                    cmd.arg("--cert-file")
                        .arg(cert)
                        .arg("--key-file")
                        .arg(key)
                        .arg("--trusted-ca-file")
                        .arg(&files.ca)
                        .arg("--client-cert-auth")
                        .arg("--peer-cert-file")
                        .arg(cert)
                        .arg("--peer-key-file")
                        .arg(key)
                        .arg("--peer-trusted-ca-file")
                        .arg(&files.ca)
                        .arg("--peer-client-cert-auth");
                }
                Proc(Some(
                    cmd.stdout(Stdio::null())
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

/// One etcd member serving clients over TLS with client-certificate
/// authentication (a replica certificate from `ca` as its server
/// certificate), restartable on the same port and data directory.
pub struct EtcdTls {
    pub addr: String,
    pub proc: Proc,
    data_dir: PathBuf,
    files: TlsFiles,
    peer: String,
}

impl EtcdTls {
    pub fn start(dir: &Path, ca: &LocalCa) -> EtcdTls {
        let files = ca.replica(99).expect("etcd server certificate");
        let mut e = EtcdTls {
            addr: format!("127.0.0.1:{}", free_port()),
            proc: Proc(None),
            data_dir: dir.join("etcd"),
            files,
            peer: format!("http://127.0.0.1:{}", free_port()),
        };
        e.proc = e.spawn();
        e
    }

    fn spawn(&self) -> Proc {
        let url = format!("https://{}", self.addr);
        Proc(Some(
            Command::new("etcd")
                .args(["--name", "m0"])
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args(["--listen-peer-urls", &self.peer])
                .args(["--initial-advertise-peer-urls", &self.peer])
                .args(["--initial-cluster", &format!("m0={}", self.peer)])
                .arg("--cert-file")
                .arg(self.files.cert.as_ref().expect("cert"))
                .arg("--key-file")
                .arg(self.files.key.as_ref().expect("key"))
                .arg("--trusted-ca-file")
                .arg(&self.files.ca)
                .arg("--client-cert-auth")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd (install Debian's etcd-server)"),
        ))
    }

    /// Stops the member (SIGKILL: what a crashed cloud service looks like).
    pub fn stop(&mut self) {
        self.proc.kill9();
    }

    /// Starts it again with the same data.
    pub fn restart(&mut self) {
        self.proc = self.spawn();
    }

    /// The CA, client certificate and key to reach it with.
    pub fn client_files(&self) -> &TlsFiles {
        &self.files
    }
}

/// One `fjord control-plane` replica on loopback with the given node
/// heartbeat interval and lease, trusting [`local_ca`]`(dir)`; returns it
/// and its public address.
pub fn control_plane(bin: &Path, dir: &Path, heartbeat_ms: u64, lease_ms: u64) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let ca = local_ca(dir);
    let tls = ca.replica(1).expect("replica certificate");
    let p = Proc(Some(
        with_tls(with_kek(&mut Command::new(bin), &ca), &tls)
            .args(["control-plane", "--id", "1", "--listen", &addr])
            .args(["--peer-listen", &peer, "--peers", &format!("1={peer}")])
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

/// A `fjord media-node` process with its node certificate from `ca`,
/// returned once it is registered and serving.
pub fn media_node(
    bin: &Path,
    ca: &LocalCa,
    id: &str,
    region: &str,
    cp_addr: &str,
    capacity: u32,
) -> Proc {
    media_node_with(bin, ca, id, region, cp_addr, capacity, &[])
}

/// [`media_node`] with more flags (`cp_addrs` comma-separated).
pub fn media_node_with(
    bin: &Path,
    ca: &LocalCa,
    id: &str,
    region: &str,
    cp_addrs: &str,
    capacity: u32,
    extra: &[String],
) -> Proc {
    use std::io::{BufRead, BufReader};
    let cp_addr = cp_addrs;
    let addr = format!("127.0.0.1:{}", free_port());
    let tls = ca.node(id).expect("node certificate");
    let mut child = with_tls(&mut Command::new(bin), &tls)
        .args(["media-node", "--region", region, "--id", id])
        .args(["--listen", &addr, "--control-plane", cp_addr])
        .args(["--capacity", &capacity.to_string()])
        .args(extra)
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

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
