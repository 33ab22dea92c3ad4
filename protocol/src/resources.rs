//! Resources and labels: what a peer has (CPU, memory, disk and free-form `key=value` labels, its
//! capacity, advertised in its load report) and what a task needs (the same, in its signed spec).
//!
//! Owns the fit rule — a task fits a peer when every label it needs is among the peer's and every
//! amount it needs is at most what the peer has — the reason a task fits no peer, in words a user
//! reads in `task show`, and the text forms (`2`, `0.5` cpus; `512M`, `1G` bytes; `gpu=1`). It
//! never decides where a task goes ([`crate::placement`]) or when it starts (the scheduler, which
//! accounts what running tasks use against the peer's capacity).

use std::fmt;

use bincode::{Decode, Encode};

/// Amounts of CPU, memory and disk. Zero means "none asked" in a need, "none to give" in a
/// capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_milli: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes.
    pub disk: u64,
}

impl Resources {
    /// Whether these amounts are all at most `have`'s.
    pub fn fits_in(&self, have: &Resources) -> bool {
        self.cpu_milli <= have.cpu_milli && self.memory <= have.memory && self.disk <= have.disk
    }

    /// Whether nothing is asked.
    pub fn is_zero(&self) -> bool {
        *self == Resources::default()
    }

    /// The sum, saturating.
    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(other.cpu_milli),
            memory: self.memory.saturating_add(other.memory),
            disk: self.disk.saturating_add(other.disk),
        }
    }

    /// The difference, saturating at zero.
    pub fn minus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory: self.memory.saturating_sub(other.memory),
            disk: self.disk.saturating_sub(other.disk),
        }
    }
}

/// A `key=value` label, of a peer (`--label zone=a`) or needed by a task.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Label {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl std::str::FromStr for Label {
    type Err = String;

    /// Parses `key=value`: a non-empty key of letters, digits, `-`, `_`, `.` or `/`, and any value
    /// without whitespace.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("{text:?}: a label is key=value, such as gpu=1"));
        };
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !key_ok {
            return Err(format!(
                "{text:?}: a label key is letters, digits, '-', '_', '.' or '/'"
            ));
        }
        if value.chars().any(char::is_whitespace) {
            return Err(format!("{text:?}: a label value has no spaces"));
        }
        Ok(Label {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// What a task needs of the peer that runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Needs {
    /// The amounts it uses while it runs.
    pub resources: Resources,
    /// Labels the peer must have, sorted.
    pub labels: Vec<Label>,
}

impl Needs {
    /// Whether it needs nothing in particular.
    pub fn is_empty(&self) -> bool {
        self.resources.is_zero() && self.labels.is_empty()
    }
}

/// What a peer offers: its capacity and its labels (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Offer {
    /// Its capacity.
    pub capacity: Resources,
    /// Its labels, sorted.
    pub labels: Vec<Label>,
}

impl Offer {
    /// Whether a task with these needs can ever run here.
    pub fn fits(&self, needs: &Needs) -> bool {
        needs.resources.fits_in(&self.capacity) && self.has_labels(&needs.labels)
    }

    /// Whether every one of `labels` is among this peer's.
    pub fn has_labels(&self, labels: &[Label]) -> bool {
        labels.iter().all(|l| self.labels.binary_search(l).is_ok())
    }
}

/// Why a task with `needs` fits none of `offers` (the live peers that can run its kind), in the
/// words `task show` prints: the first need that no peer meets, or, if each is met somewhere, that
/// no single peer meets them all. `None` if some peer fits.
pub fn why_unfit<'a>(
    needs: &Needs,
    offers: impl Iterator<Item = &'a Offer> + Clone,
) -> Option<String> {
    if offers.clone().any(|o| o.fits(needs)) {
        return None;
    }
    if offers.clone().next().is_none() {
        return Some("no live peer can run it".to_string());
    }
    for label in &needs.labels {
        if !offers
            .clone()
            .any(|o| o.has_labels(std::slice::from_ref(label)))
        {
            return Some(format!("needs label {label}; no live peer has it"));
        }
    }
    let need = needs.resources;
    let most = offers.clone().fold(Resources::default(), |m, o| Resources {
        cpu_milli: m.cpu_milli.max(o.capacity.cpu_milli),
        memory: m.memory.max(o.capacity.memory),
        disk: m.disk.max(o.capacity.disk),
    });
    if need.cpu_milli > most.cpu_milli {
        return Some(format!(
            "needs {} cpus; the most a live peer has is {}",
            format_cpus(need.cpu_milli),
            format_cpus(most.cpu_milli)
        ));
    }
    if need.memory > most.memory {
        return Some(format!(
            "needs {} memory; the most a live peer has is {}",
            format_bytes(need.memory),
            format_bytes(most.memory)
        ));
    }
    if need.disk > most.disk {
        return Some(format!(
            "needs {} disk; the most a live peer has is {}",
            format_bytes(need.disk),
            format_bytes(most.disk)
        ));
    }
    Some("no live peer has everything it needs at once".to_string())
}

/// Parses a CPU amount: a whole or decimal number of cores (`2`, `0.5`, `1.25`), to thousandths.
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?}: cpus are a number of cores, such as 2 or 0.5");
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 3 {
        return Err(bad());
    }
    if !whole
        .chars()
        .chain(frac.chars())
        .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u32 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` or `T` (powers of 1024; `KiB`, `MB` and
/// the like are read the same way), such as `512M`, `1.5G` or `2 GiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|e| {
            format!("{text:?}: a size is a number with K, M, G or T, such as 512M or 2G ({e})")
        })
}

/// Cores from thousandths, as people write them: `2`, `0.5`.
pub fn format_cpus(milli: u32) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        let text = format!("{}.{:03}", milli / 1000, milli % 1000);
        text.trim_end_matches('0').to_string()
    }
}

/// Bytes in the largest unit that keeps one decimal: `512 MiB`, `1.5 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(text: &str) -> Label {
        text.parse().unwrap()
    }

    fn offer(cpus: u32, memory: u64, labels: &[&str]) -> Offer {
        let mut labels: Vec<Label> = labels.iter().map(|l| label(l)).collect();
        labels.sort();
        Offer {
            capacity: Resources {
                cpu_milli: cpus * 1000,
                memory,
                disk: 0,
            },
            labels,
        }
    }

    #[test]
    fn amounts_and_labels_parse_and_print() {
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("1.25"), Ok(1250));
        assert!(parse_cpus("two").is_err());
        assert!(parse_cpus("0.0001").is_err());
        assert!(parse_cpus("-1").is_err());
        assert_eq!(format_cpus(500), "0.5");
        assert_eq!(format_cpus(3000), "3");
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("1Q").is_err());
        assert!(parse_bytes("G").is_err());
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(
            parse_bytes("2GB"),
            Ok(2 << 30),
            "powers of 1024 whatever the spelling"
        );
        assert!(parse_bytes("-1G").is_err());
        assert_eq!(format_bytes(512 << 20), "512 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(label("gpu=1").to_string(), "gpu=1");
        assert!("gpu".parse::<Label>().is_err());
        assert!("=1".parse::<Label>().is_err());
        assert!("zone=a b".parse::<Label>().is_err());
    }

    #[test]
    fn a_task_fits_where_every_label_and_amount_is_met() {
        let gpu = offer(4, 8 << 30, &["gpu=1", "zone=a"]);
        let plain = offer(16, 64 << 30, &["zone=b"]);
        let needs = Needs {
            resources: Resources {
                cpu_milli: 2000,
                memory: 1 << 30,
                disk: 0,
            },
            labels: vec![label("gpu=1")],
        };
        assert!(gpu.fits(&needs));
        assert!(!plain.fits(&needs));
        assert!(plain.fits(&Needs::default()));
        assert_eq!(why_unfit(&needs, [&gpu, &plain].into_iter()), None);
    }

    #[test]
    fn the_reason_names_the_first_need_no_peer_meets() {
        let a = offer(4, 8 << 30, &["zone=a"]);
        let b = offer(2, 16 << 30, &["gpu=1"]);
        let why = |needs: &Needs| why_unfit(needs, [&a, &b].into_iter()).unwrap();
        let gpu2 = Needs {
            labels: vec![label("gpu=2")],
            ..Needs::default()
        };
        assert_eq!(why(&gpu2), "needs label gpu=2; no live peer has it");
        let memory = Needs {
            resources: Resources {
                memory: 32 << 30,
                ..Resources::default()
            },
            ..Needs::default()
        };
        assert_eq!(
            why(&memory),
            "needs 32 GiB memory; the most a live peer has is 16 GiB"
        );
        let both = Needs {
            resources: Resources {
                cpu_milli: 4000,
                ..Resources::default()
            },
            labels: vec![label("gpu=1")],
        };
        assert_eq!(why(&both), "no live peer has everything it needs at once");
        assert_eq!(
            why_unfit(&Needs::default(), std::iter::empty()),
            Some("no live peer can run it".to_string())
        );
    }
}
