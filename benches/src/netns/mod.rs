//! A small network of Linux network namespaces for real-process fault
//! tests: one namespace per host, each joined by a veth pair to a bridge
//! in a switch namespace, and the faults a network can have — partitions
//! (both ways or one way) and random loss with nftables, delay with
//! jitter (hence reordering) through a netfilter queue ([`delay`]).
//! Everything lives in namespaces this fabric made (addresses too), and is
//! removed when it is dropped.

pub mod delay;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use delay::{Delay, DelayStats};

/// The subnet every host of a fabric is on (inside its own namespaces).
const SUBNET_PREFIX: &str = "10.99.0";

/// Why a fabric could not be made or changed: the failing command and
/// what it printed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {stderr}")]
pub struct NetnsError {
    pub command: String,
    pub stderr: String,
}

/// One host: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub ip: String,
}

pub struct Fabric {
    switch: String,
    pub hosts: Vec<Host>,
    /// Delays in force, per host.
    delays: Mutex<BTreeMap<String, Delay>>,
    /// What the delays stopped so far did.
    delay_stats: Mutex<DelayStats>,
}

fn failed(command: String, e: impl std::fmt::Display) -> NetnsError {
    NetnsError {
        command,
        stderr: e.to_string(),
    }
}

/// A finished command's result: its stderr when it failed.
fn judged(command: impl FnOnce() -> String, out: std::process::Output) -> Result<(), NetnsError> {
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(failed(command(), stderr))
    }
}

fn run(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(args.join(" "), e))?;
    judged(|| args.join(" "), out)
}

/// `nft` reading its script from stdin, in namespace `netns`.
fn nft(netns: &str, script: &str) -> Result<(), NetnsError> {
    use std::io::Write;
    let what = || format!("nft in {netns}");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(what(), e))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| failed(what(), e))?;
    let out = child.wait_with_output().map_err(|e| failed(what(), e))?;
    judged(|| format!("nft in {netns}: {script}"), out)
}

impl Fabric {
    /// Makes a switch and one namespace per name in `hosts`, numbered from
    /// `.10` on the fabric's subnet. `tag` keeps names unique per run (at
    /// most 6 characters: interface names are at most 15).
    pub fn create(tag: &str, hosts: &[&str]) -> Result<Fabric, NetnsError> {
        assert!(tag.len() <= 6, "fabric tag {tag:?} longer than 6");
        let prefix = format!("fj{tag}");
        let switch = format!("{prefix}-sw");
        let mut fabric = Fabric {
            switch: switch.clone(),
            hosts: Vec::new(),
            delays: Mutex::new(BTreeMap::new()),
            delay_stats: Mutex::new(DelayStats::default()),
        };
        run(&["ip", "netns", "add", &switch])?;
        run(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &switch, "link", "set", "br0", "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            assert!(name.len() <= 5, "host name {name:?} longer than 5");
            let netns = format!("{prefix}-{name}");
            let ip = format!("{SUBNET_PREFIX}.{}", 10 + i);
            let (inner, outer) = (format!("{prefix}{name}"), format!("{prefix}{name}s"));
            run(&["ip", "netns", "add", &netns])?;
            fabric.hosts.push(Host {
                name: name.to_string(),
                netns: netns.clone(),
                ip: ip.clone(),
            });
            run(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
            run(&[
                "ip", "-n", &netns, "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                "netns", &switch,
            ])?;
            run(&["ip", "-n", &switch, "link", "set", &outer, "master", "br0"])?;
            run(&["ip", "-n", &switch, "link", "set", &outer, "up"])?;
            run(&[
                "ip",
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &inner,
            ])?;
            run(&["ip", "-n", &netns, "link", "set", &inner, "up"])?;
            nft(
                &netns,
                "table inet fjord_chaos {\n\
                 chain input { type filter hook input priority 0; policy accept; }\n\
                 chain output { type filter hook output priority 0; policy accept; }\n}\n",
            )?;
        }
        Ok(fabric)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(host).netns])
            .arg(program);
        c
    }

    /// Drops what `from` sends to `to` (and, with `both_ways`, what `to`
    /// sends to `from`).
    pub fn cut(&self, from: &str, to: &str, both_ways: bool) -> Result<(), NetnsError> {
        let (a, b) = (self.host(from), self.host(to));
        nft(
            &a.netns,
            &format!("add rule inet fjord_chaos output ip daddr {} drop\n", b.ip),
        )?;
        if both_ways {
            nft(
                &a.netns,
                &format!("add rule inet fjord_chaos input ip saddr {} drop\n", b.ip),
            )?;
        }
        Ok(())
    }

    /// Drops `percent` % of what `host` sends, at random.
    pub fn lose(&self, host: &str, percent: u32) -> Result<(), NetnsError> {
        nft(
            &self.host(host).netns,
            &format!("add rule inet fjord_chaos output numgen random mod 100 < {percent} drop\n"),
        )
    }

    /// Delays `percent` % of what `host` sends, at random, each packet by
    /// `ms / 2 ..= 3 * ms / 2` milliseconds (so packets overtake each
    /// other), until [`Fabric::heal`].
    pub fn delay(&self, host: &str, ms: u64, percent: u32, seed: u64) -> Result<(), NetnsError> {
        let index = self
            .hosts
            .iter()
            .position(|h| h.name == host)
            .unwrap_or_else(|| panic!("no host {host}"));
        let h = &self.hosts[index];
        let queue_num = 100 + index as u16;
        let mut delays = self.delays.lock().expect("delays lock");
        if delays.contains_key(host) {
            return Ok(());
        }
        let d = Delay::start(format!("/var/run/netns/{}", h.netns), queue_num, ms, seed)?;
        delays.insert(host.to_string(), d);
        run(&[
            "ip",
            "netns",
            "exec",
            &h.netns,
            "iptables",
            "-w",
            "-A",
            "OUTPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{:.2}", f64::from(percent.min(100)) / 100.0),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue_num.to_string(),
            "--queue-bypass",
        ])
    }

    /// Packets delayed and reordered by the delays stopped so far.
    pub fn delay_stats(&self) -> DelayStats {
        *self.delay_stats.lock().expect("delay stats lock")
    }

    /// Removes every partition, loss and delay rule of `host`.
    pub fn heal(&self, host: &str) -> Result<(), NetnsError> {
        let netns = &self.host(host).netns;
        nft(
            netns,
            "flush chain inet fjord_chaos input\nflush chain inet fjord_chaos output\n",
        )?;
        let delay = self.delays.lock().expect("delays lock").remove(host);
        if let Some(d) = delay {
            // The rule first, so nothing new is queued; then what is held
            // goes.
            run(&[
                "ip", "netns", "exec", netns, "iptables", "-w", "-F", "OUTPUT",
            ])?;
            let stats = d.stop()?;
            let mut total = self.delay_stats.lock().expect("delay stats lock");
            total.delayed += stats.delayed;
            total.reordered += stats.reordered;
        }
        Ok(())
    }

    pub fn heal_all(&self) -> Result<(), NetnsError> {
        for h in &self.hosts {
            self.heal(&h.name)?;
        }
        Ok(())
    }

    /// Moves the calling thread into `host`'s namespace; threads it starts
    /// afterwards (a tokio runtime's workers) are there too.
    pub fn enter(&self, host: &str) -> Result<(), NetnsError> {
        enter_path(&format!("/var/run/netns/{}", self.host(host).netns))
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_path(path: &str) -> Result<(), NetnsError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).map_err(|e| failed(format!("open {path}"), e))?;
    // SAFETY: setns on a namespace file we hold open; it changes only the
    // calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(failed(
            format!("setns {path}"),
            std::io::Error::last_os_error(),
        ))
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Held packets go before their namespaces do.
        self.delays.lock().expect("delays lock").clear();
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.netns]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch]);
    }
}
