//! COM_STMT_SEND_LONG_DATA held by the gateway until the statement's execute.
//!
//! Statements are prepared lazily on whichever backend connection serves the execute, so a
//! parameter's chunks cannot go ahead of it: they wait here and are sent just before the execute
//! (in packets the backend accepts). What a session holds is bounded per parameter (as a server
//! bounds it by `max_allowed_packet`) and per session; data that would exceed a bound is
//! refused whole at the next execute with the server's error, never truncated.

use crate::error::GatewayError;

/// Bounds on the long data a session holds.
#[derive(Debug, Clone, Copy)]
pub struct LongDataLimits {
    /// `frontend.max-allowed-packet`.
    pub per_parameter: usize,
    /// `frontend.max-long-data`.
    pub per_session: usize,
}

/// One statement's long data.
#[derive(Debug, Default)]
pub struct LongData {
    /// Per parameter, the bytes received so far.
    params: Vec<Option<Vec<u8>>>,
    /// Why the next execute fails, once some data was refused.
    refused: Option<Refusal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// A parameter index the statement does not have.
    NoSuchParameter,
    /// A parameter longer than the per-parameter bound.
    ParameterTooLong,
    /// More than the session may hold.
    SessionLimit,
}

impl LongData {
    /// For a statement of `params` parameters.
    pub fn new(params: usize) -> Self {
        Self {
            params: vec![None; params],
            refused: None,
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.params.iter().flatten().map(Vec::len).sum()
    }

    /// Drops the data (not the refusal); returns the bytes freed.
    fn drop_data(&mut self) -> usize {
        let freed = self.held();
        self.params.iter_mut().for_each(|p| *p = None);
        freed
    }
}

/// The session's account of what its statements' [`LongData`] hold.
#[derive(Debug)]
pub struct LongDataHeld {
    limits: LongDataLimits,
    held: usize,
}

impl LongDataHeld {
    pub fn new(limits: LongDataLimits) -> Self {
        Self { limits, held: 0 }
    }

    /// Bytes held by all the session's statements.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Every statement went away at once (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn forget_all(&mut self) {
        self.held = 0;
    }

    /// One chunk for parameter `param` of `ld`'s statement.
    pub fn append(&mut self, ld: &mut LongData, param: u16, data: &[u8]) {
        if ld.refused.is_some() {
            return;
        }
        let refusal = match ld.params.get(usize::from(param)) {
            None => Some(Refusal::NoSuchParameter),
            Some(slot)
                if slot.as_ref().map_or(0, Vec::len) + data.len() > self.limits.per_parameter =>
            {
                Some(Refusal::ParameterTooLong)
            }
            Some(_) if self.held + data.len() > self.limits.per_session => {
                Some(Refusal::SessionLimit)
            }
            Some(_) => None,
        };
        match (refusal, ld.params.get_mut(usize::from(param))) {
            (None, Some(slot)) => {
                slot.get_or_insert_with(Vec::new).extend_from_slice(data);
                self.held += data.len();
            }
            (refusal, _) => {
                ld.refused = refusal;
                self.held -= ld.drop_data();
            }
        }
    }

    /// COM_STMT_RESET or close: data and refusal gone.
    pub fn reset(&mut self, ld: &mut LongData) {
        self.held -= ld.drop_data();
        ld.refused = None;
    }

    /// What an execute sends ahead of itself: the data (taken: an execute consumes it, as on
    /// the server), or the error that refused some of it.
    pub fn take(&mut self, ld: &mut LongData) -> Result<Vec<(u16, Vec<u8>)>, GatewayError> {
        let refused = ld.refused.take();
        let taken: Vec<(u16, Vec<u8>)> = ld
            .params
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| Some((u16::try_from(i).ok()?, p.take()?)))
            .collect();
        self.held -= taken.iter().map(|(_, d)| d.len()).sum::<usize>();
        match refused {
            None => Ok(taken),
            Some(r) => Err(self.refusal_error(r)),
        }
    }

    fn refusal_error(&self, r: Refusal) -> GatewayError {
        let message = match r {
            Refusal::NoSuchParameter => {
                return GatewayError::Server {
                    code: 1210,
                    state: "HY000".into(),
                    message: "Incorrect arguments to mysqld_stmt_send_long_data".into(),
                };
            }
            Refusal::ParameterTooLong => format!(
                "Parameter of prepared statement which is set through mysql_send_long_data() is longer than 'max_allowed_packet' bytes ({}: the gateway's frontend.max-allowed-packet)",
                self.limits.per_parameter
            ),
            Refusal::SessionLimit => format!(
                "Parameters of prepared statements set through mysql_send_long_data() exceed the {} bytes a session may hold in the gateway (frontend.max-long-data)",
                self.limits.per_session
            ),
        };
        GatewayError::Server {
            code: 1105,
            state: "HY000".into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(limits: (usize, usize)) -> LongDataHeld {
        LongDataHeld::new(LongDataLimits {
            per_parameter: limits.0,
            per_session: limits.1,
        })
    }

    fn code(r: &Result<Vec<(u16, Vec<u8>)>, GatewayError>) -> Option<u16> {
        match r {
            Err(GatewayError::Server { code, .. }) => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn chunks_join_and_an_execute_takes_them() {
        let mut h = held((10, 100));
        let mut ld = LongData::new(2);
        h.append(&mut ld, 1, b"abc");
        h.append(&mut ld, 1, b"def");
        assert_eq!(h.held(), 6);
        assert_eq!(h.take(&mut ld).ok(), Some(vec![(1, b"abcdef".to_vec())]));
        assert_eq!(h.held(), 0);
        assert_eq!(h.take(&mut ld).ok(), Some(vec![]));
    }

    #[test]
    fn what_exceeds_a_bound_is_refused_whole_until_reset() {
        let mut h = held((4, 6));
        let mut ld = LongData::new(1);
        h.append(&mut ld, 0, b"abcd");
        h.append(&mut ld, 0, b"e");
        assert_eq!(h.held(), 0, "the refused parameter's data is freed");
        h.append(&mut ld, 0, b"x");
        assert_eq!(code(&h.take(&mut ld)), Some(1105));
        // The refusal is reported once; the statement is usable again.
        h.append(&mut ld, 0, b"ok");
        assert_eq!(h.take(&mut ld).ok(), Some(vec![(0, b"ok".to_vec())]));
        // The session bound counts every statement.
        let (mut a, mut b) = (LongData::new(1), LongData::new(1));
        h.append(&mut a, 0, b"1234");
        h.append(&mut b, 0, b"567");
        assert_eq!(code(&h.take(&mut b)), Some(1105));
        assert_eq!(h.held(), 4);
        h.reset(&mut a);
        assert_eq!(h.held(), 0);
        let mut c = LongData::new(1);
        h.append(&mut c, 3, b"x");
        assert_eq!(code(&h.take(&mut c)), Some(1210));
    }
}
