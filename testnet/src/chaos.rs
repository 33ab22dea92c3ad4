//! Chaos: faults injected while a workload runs, parsed from `--chaos` specs.
//!
//! - `kill-every=DUR[,restart-after=DUR]`: SIGKILL a random live peer every DUR; with
//!   `restart-after`, start it again with its data directory that long after.
//! - `stop=DUR[,stop-every=DUR]`: SIGSTOP a random live peer for DUR, then SIGCONT it; again every
//!   `stop-every` (default DUR + 2 s).
//! - `partition=A|B:DUR`: cut the swarm between peer groups A and B (1-based peer numbers, comma
//!   separated) one second into the workload, and heal it DUR later; `A|B|C` cuts three groups
//!   from each other. `partition=A>B:DUR` cuts one way: nothing A sends reaches B, while what B
//!   sends still reaches A (over TCP, B's messages arrive but are not acknowledged). Needs
//!   `--netns` (root). A run with a partition reads its report after the heal, from every peer.
//! - `drain-every=DUR`: every DUR, drain the next peer in turn (peer 1, 2, … and round again) as
//!   `taskswarm drain` does, wait for it to stop, and start it again with its data directory: a
//!   rolling restart of the whole swarm.
//!
//! Kill and stop never pick peer 1 (everyone's bootstrap peer: a restarted peer finds the swarm
//! through it); no chaos takes a peer down while fewer than three are up.

use std::time::Duration;

use anyhow::{Context, bail};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use taskswarm::spec::parse_duration;
use tokio::sync::watch;

use crate::swarm::Control;

/// One kind of fault.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Chaos {
    /// Kill a random peer every `every`, restart it after `restart_after`.
    Kill {
        /// How often.
        #[serde(serialize_with = "as_ms")]
        every: Duration,
        /// How long it stays down (for good if `None`).
        #[serde(serialize_with = "as_ms_opt")]
        restart_after: Option<Duration>,
    },
    /// Pause a random peer for `pause`, every `every`.
    Stop {
        /// How long it is paused.
        #[serde(serialize_with = "as_ms")]
        pause: Duration,
        /// How often.
        #[serde(serialize_with = "as_ms")]
        every: Duration,
    },
    /// Drain the next peer in turn every `every`, and start it again once it stopped.
    Drain {
        /// How often.
        #[serde(serialize_with = "as_ms")]
        every: Duration,
    },
    /// Cut `groups` (0-based) apart for `length`: each from every other, or (`one_way`, two
    /// groups) the first from the second only.
    Partition {
        /// The sides.
        groups: Vec<Vec<usize>>,
        /// Whether only what the first group sends to the second is dropped.
        one_way: bool,
        /// How long the cut lasts.
        #[serde(serialize_with = "as_ms")]
        length: Duration,
    },
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn as_ms_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_millis() as u64),
        None => s.serialize_none(),
    }
}

fn duration(key: &str, value: &str) -> anyhow::Result<Duration> {
    parse_duration(value).map_err(|e| anyhow::anyhow!("{key}={value}: {e}"))
}

fn group(text: &str, peers: usize) -> anyhow::Result<Vec<usize>> {
    text.split(',')
        .map(|n| {
            let n: usize = n
                .trim()
                .parse()
                .with_context(|| format!("`{n}` is not a peer number"))?;
            if n == 0 || n > peers {
                bail!("there is no peer {n} (peers are numbered 1 to {peers})");
            }
            Ok(n - 1)
        })
        .collect()
}

impl Chaos {
    /// Parses one `--chaos` spec for a testnet of `peers` peers.
    pub(crate) fn parse(spec: &str, peers: usize) -> anyhow::Result<Self> {
        let mut pairs = Vec::new();
        for part in spec.split(',') {
            // A partition's groups contain commas: glue them back to their key.
            match part.split_once('=') {
                Some((key, value)) => pairs.push((key.trim().to_string(), value.to_string())),
                None => match pairs.last_mut() {
                    Some((key, value)) if key == "partition" => {
                        value.push(',');
                        value.push_str(part);
                    }
                    _ => bail!("`{part}` is not KEY=VALUE"),
                },
            }
        }
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let known = [
            "kill-every",
            "restart-after",
            "stop",
            "stop-every",
            "partition",
            "drain-every",
        ];
        if let Some((key, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            bail!("unknown chaos `{key}`; expected one of {known:?}");
        }
        if let Some(every) = get("kill-every") {
            let every = duration("kill-every", every)?;
            anyhow::ensure!(!every.is_zero(), "kill-every must be more than 0");
            let restart_after = get("restart-after")
                .map(|v| duration("restart-after", v))
                .transpose()?;
            return Ok(Chaos::Kill {
                every,
                restart_after,
            });
        }
        if let Some(pause) = get("stop") {
            let pause = duration("stop", pause)?;
            let every = match get("stop-every") {
                Some(v) => duration("stop-every", v)?,
                None => pause + Duration::from_secs(2),
            };
            anyhow::ensure!(every > pause, "stop-every must be longer than stop");
            return Ok(Chaos::Stop { pause, every });
        }
        if let Some(cut) = get("partition") {
            let (groups, length) = cut
                .rsplit_once(':')
                .context("partition=A|B:DUR needs a duration after `:`")?;
            let one_way = groups.contains('>');
            let split = if one_way { '>' } else { '|' };
            let groups: Vec<Vec<usize>> = groups
                .split(split)
                .map(|g| group(g, peers))
                .collect::<anyhow::Result<_>>()?;
            anyhow::ensure!(
                groups.len() >= 2 && !(one_way && groups.len() > 2),
                "partition=A|B:DUR needs two or more groups split by `|`, or two split by `>`"
            );
            let mut seen = std::collections::BTreeSet::new();
            anyhow::ensure!(
                groups.iter().flatten().all(|p| seen.insert(*p)),
                "a peer cannot be on two sides of a partition"
            );
            return Ok(Chaos::Partition {
                groups,
                one_way,
                length: duration("partition", length)?,
            });
        }
        if let Some(every) = get("drain-every") {
            let every = duration("drain-every", every)?;
            anyhow::ensure!(!every.is_zero(), "drain-every must be more than 0");
            return Ok(Chaos::Drain { every });
        }
        bail!("a chaos spec needs kill-every=, stop=, partition= or drain-every=")
    }

    /// Whether it needs the peers in network namespaces.
    pub(crate) fn needs_netns(&self) -> bool {
        matches!(self, Chaos::Partition { .. })
    }
}

/// How long a drained peer's running tasks may take to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Sleeps `d`, or less if `stop` turns true; whether to go on.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => None,
        _ = stop.wait_for(|s| *s) => Some(()),
    };
    stopped.is_none() && !*stop.borrow()
}

/// A random live peer other than peer 1, if at least three are live (so two stay up).
fn victim(control: &Control, rng: &mut impl Rng) -> Option<usize> {
    let live = control.live();
    if live.len() < 3 {
        return None;
    }
    let candidates: Vec<usize> = live.into_iter().filter(|&i| i != 0).collect();
    candidates.choose(rng).copied()
}

/// Runs one chaos until `stop` turns true, then undoes what it did (restarts killed peers,
/// continues paused ones, heals cuts), so the workload can finish and be counted.
pub(crate) async fn run(
    chaos: Chaos,
    control: Control,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    match chaos {
        Chaos::Kill {
            every,
            restart_after,
        } => {
            let mut down: Vec<usize> = Vec::new();
            while sleep_or_stop(every, &mut stop).await {
                let Some(i) = victim(&control, &mut rng) else {
                    continue;
                };
                control.kill(i).await?;
                match restart_after {
                    Some(after) => {
                        let control = control.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            if let Err(e) = control.restart(i).await {
                                tracing::warn!("restarting peer {}: {e:#}", i + 1);
                            }
                        });
                    }
                    None => down.push(i),
                }
            }
            // Let pending restarts land before the workload is judged.
            if let Some(after) = restart_after {
                tokio::time::sleep(after + Duration::from_millis(200)).await;
            }
            for i in 0..control.peer_ids.len() {
                if control.is_killed(i).await && !down.contains(&i) {
                    control.restart(i).await?;
                }
            }
            Ok(())
        }
        Chaos::Stop { pause, every } => {
            while sleep_or_stop(every - pause, &mut stop).await {
                let Some(i) = victim(&control, &mut rng) else {
                    continue;
                };
                control.pause(i).await?;
                tokio::time::sleep(pause).await;
                control.resume(i).await?;
            }
            Ok(())
        }
        Chaos::Drain { every } => {
            let mut next = 0;
            while sleep_or_stop(every, &mut stop).await {
                if control.live().len() < 3 {
                    continue;
                }
                let i = next % control.peer_ids.len();
                next += 1;
                control.drain(i, DRAIN_DEADLINE).await?;
                control.restart(i).await?;
            }
            Ok(())
        }
        Chaos::Partition {
            groups,
            one_way,
            length,
        } => {
            if !sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                return Ok(());
            }
            control.partition(&groups, one_way, true).await?;
            tokio::time::sleep(length).await;
            control.partition(&groups, one_way, false).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_their_faults() {
        assert_eq!(
            Chaos::parse("kill-every=2s,restart-after=1s", 5).unwrap(),
            Chaos::Kill {
                every: Duration::from_secs(2),
                restart_after: Some(Duration::from_secs(1))
            }
        );
        assert_eq!(
            Chaos::parse("stop=500ms", 4).unwrap(),
            Chaos::Stop {
                pause: Duration::from_millis(500),
                every: Duration::from_millis(2500)
            }
        );
        assert_eq!(
            Chaos::parse("partition=1,2|3,4:3s", 4).unwrap(),
            Chaos::Partition {
                groups: vec![vec![0, 1], vec![2, 3]],
                one_way: false,
                length: Duration::from_secs(3)
            }
        );
        assert_eq!(
            Chaos::parse("partition=1|2|3,4:1s", 4).unwrap(),
            Chaos::Partition {
                groups: vec![vec![0], vec![1], vec![2, 3]],
                one_way: false,
                length: Duration::from_secs(1)
            }
        );
        assert_eq!(
            Chaos::parse("partition=1,2>3,4:2s", 4).unwrap(),
            Chaos::Partition {
                groups: vec![vec![0, 1], vec![2, 3]],
                one_way: true,
                length: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str| Chaos::parse(s, 4).unwrap_err().to_string();
        assert!(err("kill-every=soon").contains("kill-every=soon"));
        assert!(err("explode=1s").contains("unknown chaos"));
        assert!(err("partition=1,2|2,3:1s").contains("two sides"));
        assert!(err("partition=1>2>3:1s").contains("two split by"));
        assert!(err("partition=1,2:1s").contains("two or more groups"));
        assert!(err("partition=1|9:1s").contains("no peer 9"));
        assert!(err("partition=1|2").contains("duration"));
        assert!(err("restart-after=1s").contains("needs kill-every"));
        assert!(err("stop=2s,stop-every=1s").contains("longer"));
    }
}
