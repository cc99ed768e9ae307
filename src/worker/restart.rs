//! When to start a dead worker again: backoff, and a respawn limit.

use core::fmt;
use core::time::Duration;

use heapless::Deque;

use super::exit::ExitReason;
use crate::channel::monotonic_now;

/// A restart policy: start the worker again after a delay that doubles
/// with each death in the window, and give up at the `LIMIT`th death within
/// `window` (upstart's `respawn limit COUNT INTERVAL`, as ChromeOS runs its
/// camera algorithms with `respawn limit 10 5`).
///
/// It holds the times of the last `LIMIT` deaths inline: no allocation,
/// and [`on_exit`](Self::on_exit) can run in the poll loop.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ipc_unixsocket::worker::{Decision, ExitReason, Restart};
///
/// let mut policy = Restart::<3>::new(Duration::from_secs(5))
///     .backoff(Duration::from_millis(10), Duration::from_secs(1));
/// let crash = ExitReason::Signaled { signal: libc::SIGSEGV, core_dumped: false };
/// assert!(matches!(policy.on_exit(crash), Decision::Restart { after, .. } if after == Duration::from_millis(10)));
/// assert!(matches!(policy.on_exit(crash), Decision::Restart { after, .. } if after == Duration::from_millis(20)));
/// assert!(matches!(policy.on_exit(crash), Decision::GiveUp { deaths: 3, .. }));
/// ```
#[derive(Debug, Clone)]
pub struct Restart<const LIMIT: usize> {
    window: Duration,
    first_delay: Duration,
    max_delay: Duration,
    deaths: Deque<Duration, LIMIT>,
}

/// What [`Restart::on_exit`] decided, with the reason of the death; its
/// `Display` is a log line.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ipc_unixsocket::worker::{Decision, ExitReason};
///
/// let decision = Decision::Restart {
///     reason: ExitReason::Exited(3),
///     after: Duration::from_millis(100),
///     deaths: 1,
/// };
/// assert_eq!(decision.to_string(), "worker exited with code 3; restarting in 100ms (1 death in the window)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the worker again once `after` has passed.
    Restart {
        /// Why the worker died.
        reason: ExitReason,
        /// The backoff delay.
        after: Duration,
        /// Deaths within the window, this one included.
        deaths: usize,
    },
    /// Too many deaths within the window: do not start it again.
    GiveUp {
        /// Why the worker died, this last time.
        reason: ExitReason,
        /// Deaths within the window (the policy's `LIMIT`).
        deaths: usize,
        /// The window.
        window: Duration,
    },
}

impl<const LIMIT: usize> Restart<LIMIT> {
    /// A policy that gives up at the `LIMIT`th death within `window`, with
    /// a backoff of 100 ms doubling up to 10 s.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// // `respawn limit 10 5`
    /// let policy = ipc_unixsocket::worker::Restart::<10>::new(Duration::from_secs(5));
    /// # drop(policy);
    /// ```
    #[must_use]
    pub const fn new(window: Duration) -> Self {
        const { assert!(LIMIT > 0, "a respawn limit of 0 never starts the worker") };
        Self {
            window,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            deaths: Deque::new(),
        }
    }

    /// The backoff: `first` after the first death in the window, doubling
    /// with each further one, never more than `max`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = ipc_unixsocket::worker::Restart::<10>::new(Duration::from_secs(5))
    ///     .backoff(Duration::from_millis(50), Duration::from_secs(2));
    /// # drop(policy);
    /// ```
    #[must_use]
    pub const fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_delay = first;
        self.max_delay = max;
        self
    }

    /// Records a death now (`CLOCK_MONOTONIC`) and decides. Allocates
    /// nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::worker::{Decision, ExitReason, Restart};
    ///
    /// let mut policy = Restart::<10>::new(Duration::from_secs(5));
    /// let decision = policy.on_exit(ExitReason::Exited(1));
    /// assert!(matches!(decision, Decision::Restart { deaths: 1, .. }));
    /// ```
    pub fn on_exit(&mut self, reason: ExitReason) -> Decision {
        self.on_exit_at(reason, monotonic_now())
    }

    fn on_exit_at(&mut self, reason: ExitReason, now: Duration) -> Decision {
        while self
            .deaths
            .front()
            .is_some_and(|&then| now.saturating_sub(then) >= self.window)
        {
            self.deaths.pop_front();
        }
        if self.deaths.is_full() {
            self.deaths.pop_front();
        }
        let _ = self.deaths.push_back(now);
        let deaths = self.deaths.len();
        if deaths >= LIMIT {
            return Decision::GiveUp {
                reason,
                deaths,
                window: self.window,
            };
        }
        let doublings = u32::try_from(deaths - 1).unwrap_or(u32::MAX).min(31);
        let after = self
            .first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        Decision::Restart {
            reason,
            after,
            deaths,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Restart {
                reason,
                after,
                deaths,
            } => write!(
                f,
                "worker {reason}; restarting in {after:?} ({deaths} death{} in the window)",
                if *deaths == 1 { "" } else { "s" }
            ),
            Self::GiveUp {
                reason,
                deaths,
                window,
            } => write!(
                f,
                "worker {reason}; giving up: {deaths} deaths within {window:?}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH: ExitReason = ExitReason::Exited(1);

    #[test]
    fn forgets_deaths_older_than_the_window() {
        let mut policy = Restart::<2>::new(Duration::from_secs(5));
        let t = Duration::from_secs(100);
        assert!(matches!(
            policy.on_exit_at(CRASH, t),
            Decision::Restart { deaths: 1, .. }
        ));
        let later = t + Duration::from_secs(5);
        assert!(matches!(
            policy.on_exit_at(CRASH, later),
            Decision::Restart { deaths: 1, .. }
        ));
        assert!(matches!(
            policy.on_exit_at(CRASH, later + Duration::from_secs(1)),
            Decision::GiveUp { deaths: 2, .. }
        ));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let mut policy = Restart::<10>::new(Duration::from_secs(5))
            .backoff(Duration::from_millis(100), Duration::from_millis(300));
        let delays: [u64; 4] = core::array::from_fn(|i| {
            match policy.on_exit_at(CRASH, Duration::from_millis(i as u64)) {
                Decision::Restart { after, .. } => after.as_millis() as u64,
                Decision::GiveUp { .. } => 0,
            }
        });
        assert_eq!(delays, [100, 200, 300, 300]);
    }
}
