//! The open-files limit: every WSS session is a socket, so a process left at
//! the common default soft limit (1024) would refuse connections long before
//! `max_connections`. At start the soft limit is raised to the hard one, and
//! a limit still below what `max_connections` needs is said out loud.

/// Descriptors kept aside for listeners, certificates, logs, Redis, and the
/// connections being accepted and refused.
const SLACK: u64 = 256;

/// The open-files limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub was: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit, and reports it.
/// `None` if the limit cannot be read (not on a Unix-like system).
pub fn raise() -> Option<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the two fields of the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(FdLimit {
        was,
        now: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

impl FdLimit {
    /// The sessions this limit lets the process hold (one descriptor each).
    pub fn sessions(&self) -> u64 {
        self.now.saturating_sub(SLACK)
    }

    /// Logs the limit: a warning when it is below what `max_connections` needs.
    pub fn report(&self, max_connections: u32) {
        if self.sessions() < u64::from(max_connections) {
            tracing::warn!(
                open_files = self.now,
                max_connections,
                "the process may open only {} files, so it holds at most about {} WSS sessions, \
                 fewer than max_connections: raise the hard limit (`ulimit -Hn`, systemd's LimitNOFILE) \
                 or lower max_connections",
                self.now,
                self.sessions()
            );
        } else if self.was < self.now {
            tracing::debug!(from = self.was, to = self.now, "open-files limit raised");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let limit = raise().expect("a Unix system");
        assert_eq!(limit.now, limit.hard);
        assert!(limit.now >= limit.was);
        // Raising again changes nothing.
        assert_eq!(raise().expect("a Unix system").was, limit.now);
    }

    #[test]
    fn sessions_leave_room_for_the_rest() {
        let limit = FdLimit {
            was: 1024,
            now: 20_000,
            hard: 20_000,
        };
        assert_eq!(limit.sessions(), 20_000 - SLACK);
        let tiny = FdLimit {
            was: 100,
            now: 100,
            hard: 100,
        };
        assert_eq!(tiny.sessions(), 0);
    }
}
