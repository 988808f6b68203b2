//! MariaDB GTID positions (`domain-server-seq`, comma-separated per domain), as the gateway
//! compares them for read-your-writes: a replica has applied a session's writes when, in every
//! domain the session wrote in, its position has reached the session's sequence number.

use std::fmt;

/// A position: per replication domain, the last GTID (sorted by domain, one entry each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPosition {
    gtids: Vec<Gtid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gtid {
    domain: u32,
    server: u32,
    seq: u64,
}

impl GtidPosition {
    /// Parses `0-1-100,1-2-7` (what `@@last_gtid`, `@@gtid_binlog_pos` and `@@gtid_slave_pos`
    /// return); `None` for text that is not a position. An empty string is the empty position.
    pub fn parse(text: &str) -> Option<Self> {
        let mut p = Self::default();
        for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut it = part.splitn(3, '-');
            let g = Gtid {
                domain: it.next()?.parse().ok()?,
                server: it.next()?.parse().ok()?,
                seq: it.next()?.parse().ok()?,
            };
            p.raise(g);
        }
        Some(p)
    }

    pub fn is_empty(&self) -> bool {
        self.gtids.is_empty()
    }

    fn raise(&mut self, g: Gtid) {
        match self.gtids.binary_search_by_key(&g.domain, |x| x.domain) {
            Ok(i) if self.gtids[i].seq < g.seq => self.gtids[i] = g,
            Ok(_) => {}
            Err(i) => self.gtids.insert(i, g),
        }
    }

    /// Takes the higher sequence of each domain from `other`.
    pub fn merge(&mut self, other: &GtidPosition) {
        for g in &other.gtids {
            self.raise(*g);
        }
    }

    /// Every domain of `other` is reached here.
    pub fn covers(&self, other: &GtidPosition) -> bool {
        other.gtids.iter().all(|g| {
            self.gtids
                .binary_search_by_key(&g.domain, |x| x.domain)
                .is_ok_and(|i| self.gtids[i].seq >= g.seq)
        })
    }
}

impl fmt::Display for GtidPosition {
    /// The form `MASTER_GTID_WAIT` takes (digits and dashes only: safe in a SQL literal).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.gtids.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}-{}-{}", g.domain, g.server, g.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> GtidPosition {
        GtidPosition::parse(s).expect("position")
    }

    #[test]
    fn positions_compare_per_domain() {
        assert!(pos("0-1-10").covers(&pos("0-1-10")));
        assert!(pos("0-1-11").covers(&pos("0-2-10")));
        assert!(!pos("0-1-9").covers(&pos("0-1-10")));
        assert!(!pos("0-1-100").covers(&pos("1-1-1")));
        assert!(pos("0-1-5,1-2-7").covers(&pos("1-2-7")));
        assert!(pos("").covers(&pos("")));
        assert!(!pos("").covers(&pos("0-1-1")));
        let mut p = pos("0-1-5");
        p.merge(&pos("1-1-3,0-1-4"));
        assert_eq!(p.to_string(), "0-1-5,1-1-3");
        assert_eq!(GtidPosition::parse("0-1"), None);
        assert_eq!(GtidPosition::parse("x-1-2"), None);
        assert_eq!(GtidPosition::parse("0-1-2'; DROP"), None);
    }
}
