//! The processes of a chaos run and their network: replicas and media
//! nodes in namespaces of their own, certificates for their addresses,
//! and what the run logs.

use super::*;

/// One process the schedule runs, and what the schedule did to it.
pub(crate) struct Managed {
    pub(crate) host: String,
    pub(crate) child: Option<Child>,
    pub(crate) stopped: bool,
    pub(crate) log: PathBuf,
}

impl Managed {
    pub(crate) fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub(crate) fn signal(&mut self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: a signal to a child process this runner started.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.stopped {
                // SAFETY: as above.
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGCONT);
                }
                self.stopped = false;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ProcRef {
    Replica(usize),
    Node(usize),
}

pub(crate) struct World {
    pub(crate) fjord: PathBuf,
    pub(crate) fabric: Arc<Fabric>,
    pub(crate) dir: PathBuf,
    pub(crate) ca: LocalCa,
    pub(crate) replicas: Vec<Managed>,
    pub(crate) nodes: Vec<Managed>,
    /// Processes that exited on their own, and panics in the logs.
    pub(crate) anomalies: Vec<String>,
}

pub(crate) fn addr(fabric: &Fabric, host: &str, port: u16) -> String {
    format!("{}:{port}", fabric.host(host).ip)
}

impl World {
    pub(crate) fn public_addrs(&self) -> Vec<String> {
        REPLICAS
            .iter()
            .map(|h| addr(&self.fabric, h, PUBLIC_PORT))
            .collect()
    }

    pub(crate) fn spawn_replica(&self, i: usize) -> Managed {
        let id = i + 1;
        let host = REPLICAS[i];
        let peers = REPLICAS
            .iter()
            .enumerate()
            .map(|(j, h)| format!("{}={}", j + 1, addr(&self.fabric, h, PEER_PORT)))
            .collect::<Vec<_>>()
            .join(",");
        let tls = self.ca.replica(id as u64).expect("replica certificate");
        let log = self.dir.join(format!("{host}.log"));
        let mut cmd = self.fabric.command(host, &self.fjord);
        let child = with_tls(with_kek(&mut cmd, &self.ca), &tls)
            .args(["control-plane", "--id", &id.to_string()])
            .args(["--listen", &addr(&self.fabric, host, PUBLIC_PORT)])
            .args(["--peer-listen", &addr(&self.fabric, host, PEER_PORT)])
            .args(["--peers", &peers])
            .args(["--metrics-listen", &addr(&self.fabric, host, METRICS_PORT)])
            .args(["--node-heartbeat-interval-ms", &HEARTBEAT_MS.to_string()])
            .args(["--node-lease-ms", &LEASE_MS.to_string()])
            .args(["--snapshot-every-entries", "200"])
            .arg("--data-dir")
            .arg(self.dir.join(host))
            .stdout(Stdio::null())
            .stderr(append(&log))
            .spawn()
            .expect("spawn fjord control-plane");
        Managed {
            host: host.into(),
            child: Some(child),
            stopped: false,
            log,
        }
    }

    pub(crate) fn spawn_node(&self, i: usize) -> Managed {
        let (host, region) = NODES[i];
        let tls = self.ca.node(host).expect("node certificate");
        let log = self.dir.join(format!("{host}.log"));
        let mut cmd = self.fabric.command(host, &self.fjord);
        let child = with_tls(&mut cmd, &tls)
            .args(["media-node", "--region", region, "--id", host])
            .args(["--listen", &addr(&self.fabric, host, MEDIA_PORT)])
            .args(["--control-plane", &self.public_addrs().join(",")])
            .args(["--capacity", "40"])
            .arg("--data-dir")
            .arg(self.dir.join(host))
            .args(["--usage-flush-interval", &format!("{FLUSH_MS}ms")])
            .stdout(Stdio::null())
            .stderr(append(&log))
            .spawn()
            .expect("spawn fjord media-node");
        Managed {
            host: host.into(),
            child: Some(child),
            stopped: false,
            log,
        }
    }

    pub(crate) fn managed(&mut self, p: ProcRef) -> &mut Managed {
        match p {
            ProcRef::Replica(i) => &mut self.replicas[i],
            ProcRef::Node(i) => &mut self.nodes[i],
        }
    }

    /// `fjord ctl -o json ARGS` as the operator, from the client's
    /// namespace; `None` when it fails.
    pub(crate) fn ctl_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let op = self.ca.operator("chaos-operator").expect("operator");
        let out = with_tls(&mut Command::new(&self.fjord), &op)
            .args(["ctl", "--endpoints", &self.public_addrs().join(",")])
            .args(["-o", "json"])
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Appends a line to the schedule's `events.log` (wall-clock ms, as
    /// the processes' logs and the ledger have them).
    pub(crate) fn event(&self, what: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("events.log"))
        {
            let _ = writeln!(f, "{} {what}", fjord_control_plane::raft::now_ms());
        }
    }

    /// Records processes that exited though nobody killed them.
    pub(crate) fn check_alive(&mut self) {
        for m in self.replicas.iter_mut().chain(self.nodes.iter_mut()) {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.anomalies
                        .push(format!("{} exited on its own: {status}", m.host));
                    m.child = None;
                }
            }
        }
    }
}

pub(crate) fn append(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// Issues every certificate the schedule uses for the fabric's addresses
/// (and loopback's, for the operator tools).
pub(crate) fn issue_certificates(ca: &LocalCa, fabric: &Fabric) {
    let sans = |ip: &str| -> Vec<String> {
        let mut s = vec![ip.to_string()];
        s.extend(pki::LOCAL_SANS.iter().map(|s| s.to_string()));
        s
    };
    for (i, host) in REPLICAS.iter().enumerate() {
        pki::issue(
            ca.dir(),
            &Identity::Replica { id: i as u64 + 1 },
            &sans(&fabric.host(host).ip),
            pki::DEFAULT_VALID_DAYS,
        )
        .expect("replica certificate");
    }
    for (host, _) in NODES {
        pki::issue(
            ca.dir(),
            &Identity::Node { id: host.into() },
            &sans(&fabric.host(host).ip),
            pki::DEFAULT_VALID_DAYS,
        )
        .expect("node certificate");
    }
}
