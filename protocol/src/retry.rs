//! Retry policy: how many attempts a task gets, how long to wait between them, and which outcomes
//! are worth another attempt.
//!
//! The policy is part of the signed spec. The task's primary applies it when an attempt ends
//! (non-zero exit, timeout) or is lost (its holder died and the lease was re-claimed). Backoff is
//! `fixed` (the same wait every time) or `exponential` (doubling from a base up to a cap, with
//! jitter drawn from the RNG the caller hands in, so retries of many tasks do not move in step).

use bincode::{Decode, Encode};
use rand::{Rng, RngCore};

use crate::Millis;
use crate::task::Outcome;

/// The wait before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Backoff {
    /// The same wait every time.
    Fixed {
        /// The wait.
        ms: Millis,
    },
    /// `base · 2^(n−1)` before attempt n + 1, at most `max`, with jitter: a wait is drawn
    /// uniformly from its upper half.
    Exponential {
        /// The first wait.
        base_ms: Millis,
        /// The longest wait.
        max_ms: Millis,
    },
}

/// Which kinds of failed attempt are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RetryOn {
    /// A process that exited non-zero or was killed by a signal, a handler that returned an
    /// error, a program that could not start.
    pub failure: bool,
    /// An attempt that ran past its timeout.
    pub timeout: bool,
    /// An attempt whose holder died (or was cut off) before reporting.
    pub lost_lease: bool,
}

/// How a task is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// Which failures are retried.
    pub retry_on: RetryOn,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential {
                base_ms: 100,
                max_ms: 10_000,
            },
            retry_on: RetryOn {
                failure: true,
                timeout: true,
                lost_lease: true,
            },
        }
    }
}

/// How an attempt ended, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum Ending {
    /// It succeeded.
    Success,
    /// It failed (non-zero exit, signal, handler error, could not start).
    Failure,
    /// It ran past its timeout and was killed.
    Timeout,
    /// Its holder was lost before it reported.
    LostLease,
    /// It was cancelled.
    Cancelled,
    /// Its program could not be started ([`Outcome::NotStarted`]): never retried.
    NotStarted,
}

impl Ending {
    /// How an outcome ended.
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            _ if outcome.succeeded() => Ending::Success,
            Outcome::TimedOut { .. } => Ending::Timeout,
            Outcome::NotStarted { .. } => Ending::NotStarted,
            _ => Ending::Failure,
        }
    }

    /// The lower-case name shown in histories.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Success => "success",
            Ending::Failure => "failure",
            Ending::Timeout => "timeout",
            Ending::LostLease => "lost-lease",
            Ending::Cancelled => "cancelled",
            Ending::NotStarted => "not-started",
        }
    }
}

impl RetryPolicy {
    /// Whether another attempt follows `attempts` attempts, the last of which ended so.
    pub fn retries(&self, ending: Ending, attempts: u32) -> bool {
        let wanted = match ending {
            Ending::Success | Ending::Cancelled | Ending::NotStarted => false,
            Ending::Failure => self.retry_on.failure,
            Ending::Timeout => self.retry_on.timeout,
            Ending::LostLease => self.retry_on.lost_lease,
        };
        wanted && attempts < self.max_attempts.max(1)
    }

    /// The wait before the attempt after `attempts` attempts.
    pub fn wait(&self, attempts: u32, rng: &mut dyn RngCore) -> Millis {
        match self.backoff {
            Backoff::Fixed { ms } => ms,
            Backoff::Exponential { base_ms, max_ms } => {
                let shift = attempts.saturating_sub(1).min(32);
                let full = base_ms.saturating_mul(1u64 << shift).min(max_ms);
                let half = full / 2;
                half + rng.random_range(0..=full - half)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn attempts_are_counted_and_kinds_respected() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed { ms: 200 },
            retry_on: RetryOn {
                failure: true,
                timeout: false,
                lost_lease: true,
            },
        };
        assert!(policy.retries(Ending::Failure, 1));
        assert!(policy.retries(Ending::Failure, 2));
        assert!(!policy.retries(Ending::Failure, 3));
        assert!(!policy.retries(Ending::Timeout, 1));
        assert!(!policy.retries(Ending::Success, 1));
        assert!(
            !policy.retries(Ending::NotStarted, 1),
            "it would fail the same way"
        );
        assert_eq!(
            policy.wait(1, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)),
            200
        );
    }

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy {
            backoff: Backoff::Exponential {
                base_ms: 100,
                max_ms: 1000,
            },
            ..RetryPolicy::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (attempts, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..20 {
                let wait = policy.wait(attempts, &mut rng);
                assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait}");
            }
        }
    }
}
