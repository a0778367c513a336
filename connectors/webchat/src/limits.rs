//! Rate limits that hold across sockets and sessions.
//!
//! A limit per socket is no limit: a visitor opens ten sockets, or a script opens fifty fresh
//! guest sessions. So messages are counted per visitor (all its tabs together) and per client
//! address (all its visitors together), new sessions per client address, and every frame of
//! any kind per socket, so that typing or malformed frames cannot flood either. The buckets
//! are GCRA cells from `governor`, keyed in a concurrent map that [`Limits::forget_idle`]
//! prunes, so the memory they take follows the number of recently active keys.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A sustained rate per minute and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_minute: u32, burst: u32) -> Rate {
        Rate { per_minute, burst }
    }

    fn quota(self) -> Quota {
        let per_minute = NonZeroU32::new(self.per_minute.max(1)).expect("at least one");
        let burst = NonZeroU32::new(self.burst.max(1)).expect("at least one");
        Quota::per_minute(per_minute).allow_burst(burst)
    }
}

/// The shared limits of one web chat channel.
pub struct Limits {
    visitor: DefaultKeyedRateLimiter<String>,
    address: DefaultKeyedRateLimiter<IpAddr>,
    sessions: DefaultKeyedRateLimiter<IpAddr>,
    frame_rate: Rate,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("visitors", &self.visitor.len())
            .field("addresses", &self.address.len())
            .finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(visitor: Rate, address: Rate, sessions: Rate, frames: Rate) -> Limits {
        Limits {
            visitor: RateLimiter::keyed(visitor.quota()),
            address: RateLimiter::keyed(address.quota()),
            sessions: RateLimiter::keyed(sessions.quota()),
            frame_rate: frames,
            clock: DefaultClock::default(),
        }
    }

    fn retry_after(
        &self,
        not_until: governor::NotUntil<governor::clock::QuantaInstant>,
    ) -> Duration {
        not_until.wait_time_from(self.clock.now())
    }

    /// A message from `visitor` at `address`: `Err(retry after)` when either is over its rate.
    pub fn message(&self, visitor: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        self.visitor
            .check_key(&visitor.to_string())
            .map_err(|not_until| self.retry_after(not_until))?;
        if let Some(address) = address {
            self.address
                .check_key(&address)
                .map_err(|not_until| self.retry_after(not_until))?;
        }
        Ok(())
    }

    /// A new session (no token to resume) from `address`.
    pub fn new_session(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        let Some(address) = address else {
            return Ok(());
        };
        self.sessions
            .check_key(&address)
            .map_err(|not_until| self.retry_after(not_until))
    }

    /// A limiter for the frames of one socket.
    pub fn frames(&self) -> DefaultDirectRateLimiter {
        RateLimiter::direct(self.frame_rate.quota())
    }

    /// Drop the buckets that are full again (their keys have been quiet long enough): they
    /// hold no state a new bucket would not.
    pub fn forget_idle(&self) {
        for limiter in [&self.address, &self.sessions] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.visitor.retain_recent();
        self.visitor.shrink_to_fit();
    }

    /// Keys currently tracked (for tests and the soak benchmark).
    pub fn tracked_keys(&self) -> usize {
        self.visitor.len() + self.address.len() + self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_across_visitors_of_one_address() {
        let limits = Limits::new(
            Rate::new(60, 5),
            Rate::new(60, 8),
            Rate::new(60, 2),
            Rate::new(60, 3),
        );
        let address: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..5 {
            assert!(limits.message("a", Some(address)).is_ok());
        }
        assert!(
            limits.message("a", Some(address)).is_err(),
            "visitor a over"
        );
        for _ in 0..3 {
            assert!(limits.message("b", Some(address)).is_ok());
        }
        let retry = limits.message("c", Some(address)).unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(1));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(limits.message("d", Some(other)).is_ok(), "another address");
        assert!(limits.new_session(Some(address)).is_ok());
        assert!(limits.new_session(Some(address)).is_ok());
        assert!(limits.new_session(Some(address)).is_err());
        let frames = limits.frames();
        assert!((0..3).all(|_| frames.check().is_ok()));
        assert!(frames.check().is_err());
    }
}
