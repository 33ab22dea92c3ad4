//! Network namespaces for a testnet (root only): each peer gets a namespace of its own with one
//! end of a veth pair, whose other end is on a bridge in the host namespace, so peers reach each
//! other (and the testnet tool reaches their APIs) over a real, cuttable network on a private
//! subnet, 10.213.0.0/24. A partition is a set of blackhole routes inside the namespaces of one
//! side towards the other side, and back: packets between the sides are dropped while every
//! peer's API stays reachable from the host.
//!
//! Everything made here is removed when the [`Net`] is dropped. Names carry the tool's PID, so
//! two testnets never share a namespace; they do share the subnet, so only one `--netns` testnet
//! runs on a machine at a time (the second one fails when it finds the bridge address taken).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The namespaces, veth pairs and bridge of one testnet.
#[derive(Debug)]
pub struct Net {
    tag: u32,
    peers: usize,
}

/// Whether this process may create network namespaces.
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("network namespaces need root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("the `ip` command (iproute2) is missing".into()),
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Creates the bridge and one namespace per peer.
    pub fn create(peers: usize) -> anyhow::Result<Self> {
        if let Err(why) = available() {
            bail!("{why}");
        }
        anyhow::ensure!(peers <= 200, "at most 200 peers in network namespaces");
        let net = Self {
            tag: std::process::id(),
            peers: 0,
        };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let mut net = net;
        ip(&["addr", "add", "10.213.0.1/24", "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..peers {
            let (ns, host_end) = (net.ns(i), net.host_end(i));
            // Made in the host namespace under a unique name, renamed once inside its own.
            let peer_end = format!("tsp{}x{}", net.tag, i + 1);
            ip(&["netns", "add", &ns])?;
            net.peers = i + 1;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &peer_end,
            ])?;
            ip(&["link", "set", &peer_end, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &peer_end, "name", "eth0"])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            let addr = format!("{}/24", net.ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("tsbr{}", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("taskswarm-{}-{}", self.tag, i + 1)
    }

    fn host_end(&self, i: usize) -> String {
        format!("tsv{}x{}", self.tag, i + 1)
    }

    /// Peer `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.213.0.{}", i + 10)
    }

    /// A command that runs `program` in peer `i`'s namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(i)]).arg(program);
        command
    }

    /// Drops (`cut`) or lets through again the packets between groups `a` and `b`.
    pub fn cut(&self, a: &[usize], b: &[usize], cut: bool) -> anyhow::Result<()> {
        self.cut_one_way(a, b, cut)?;
        self.cut_one_way(b, a, cut)
    }

    /// Cuts (or heals) the way from group `from` to group `to` only: a blackhole route in each of
    /// `from`'s namespaces to each of `to`'s addresses.
    pub fn cut_one_way(&self, from: &[usize], to: &[usize], cut: bool) -> anyhow::Result<()> {
        let verb = if cut { "add" } else { "del" };
        for (from, to) in from.iter().flat_map(|&x| to.iter().map(move |&y| (x, y))) {
            anyhow::ensure!(
                from < self.peers && to < self.peers,
                "no peer {}",
                to.max(from) + 1
            );
            let target = format!("{}/32", self.ip(to));
            ip(&["-n", &self.ns(from), "route", verb, "blackhole", &target])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.peers {
            // Deleting a namespace deletes the veth end inside it, and with it the pair.
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
