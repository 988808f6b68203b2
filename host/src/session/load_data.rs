//! LOAD DATA LOCAL INFILE: the statement runs on its backend connection while the client's file
//! streams to it (a few chunks in flight, whatever the file's size).
//!
//! The wire: the backend answers the statement with 0xFB and a file name, which goes to the
//! client; the client sends the file as packets ending with an empty one; the backend answers
//! OK (rows, warnings) or ERR, which goes back as for any statement.

use std::sync::Arc;

use bytes::Bytes;
use mysql_async::prelude::Queryable;

use super::relay::{self, Outcome, RelayMode};
use super::{Session, SessionError};
use crate::error::GatewayError;
use crate::frontend::io::ClientIo;
use crate::infile::{self, FileRelay};
use crate::pool::BackendConn;
use crate::protocol::PacketStream;
use crate::protocol::constants::cap;

impl Session {
    /// The refusal a server gives a client that did not offer CLIENT_LOCAL_FILES, in the
    /// primary's dialect.
    pub(super) fn local_infile_refusal(&self) -> Option<GatewayError> {
        if self.caps & cap::LOCAL_FILES != 0 {
            return None;
        }
        Some(if self.gw.server_version().contains("MariaDB") {
            GatewayError::Server {
                code: 4166,
                state: "HY000".into(),
                message: "The used command is not allowed because the MariaDB server or client has disabled the local infile capability".into(),
            }
        } else {
            GatewayError::Server {
                code: 3948,
                state: "42000".into(),
                message: "Loading local data is disabled; this must be enabled on both the client and server sides".into(),
            }
        })
    }

    /// Runs a LOAD DATA LOCAL statement on `conn`, relaying the file when the backend asks for
    /// it. A client that breaks off mid-file leaves the backend connection mid-statement: the
    /// driver marks it broken and it is thrown away, so the server rolls the load back rather
    /// than commit part of the file.
    pub(super) async fn run_load_local(
        &mut self,
        conn: &mut BackendConn,
        sql: &[u8],
        mode: RelayMode<'_>,
    ) -> Result<Outcome, SessionError> {
        self.entry.set_running(Some((
            Arc::clone(&conn.backend),
            self.account.clone(),
            conn.thread_id(),
        )));
        let outcome = self.load_local(conn, sql, mode).await;
        self.entry.set_running(None);
        outcome
    }

    async fn load_local(
        &mut self,
        conn: &mut BackendConn,
        sql: &[u8],
        mode: RelayMode<'_>,
    ) -> Result<Outcome, SessionError> {
        let backend = Arc::clone(&conn.backend);
        let (request, relay) = infile::channel();
        let statement = infile::answering(request, conn.conn().query_iter(sql));
        let result = with_file(statement, &mut self.stream, relay).await?;
        let mut result = result
            .map_err(|e| SessionError::Reply(GatewayError::from_backend(backend.name(), e)))?;
        let last =
            relay::relay_sets(&mut self.stream, &mut result, mode, backend.name(), None).await;
        drop(result);
        relay::finish(&mut self.stream, conn.conn(), last?, self.caps)
    }
}

/// Drives `statement` and, once its backend asks for the file, the client's file into it.
async fn with_file<F: Future>(
    statement: F,
    stream: &mut PacketStream<ClientIo>,
    FileRelay { name, data }: FileRelay,
) -> Result<F::Output, SessionError> {
    tokio::pin!(statement);
    // Until the backend asks for the file, the statement may end without asking (an ERR).
    let requested = tokio::select! {
        r = &mut statement => return Ok(r),
        n = name => n,
    };
    let Ok(file_name) = requested else {
        // The request was dropped unanswered: the statement is ending; take its result.
        return Ok(statement.await);
    };
    let pump = pump_file(stream, &file_name, data);
    tokio::pin!(pump);
    let mut pumped = false;
    loop {
        tokio::select! {
            r = &mut statement => {
                if !pumped {
                    // The backend stopped taking the file (it went away): the client's file is
                    // read to its end all the same, so the client is in step for the error.
                    (&mut pump).await?;
                }
                return Ok(r);
            }
            p = &mut pump, if !pumped => {
                p?;
                pumped = true;
            }
        }
    }
}

/// Sends the client the backend's request for `file_name`, then its file's packets to `data`
/// until the empty packet that ends it. Once the backend stops taking them, the rest is read
/// and dropped.
async fn pump_file(
    stream: &mut PacketStream<ClientIo>,
    file_name: &[u8],
    data: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), SessionError> {
    let (mark, buf) = stream.begin();
    buf.push(0xFB);
    buf.extend_from_slice(file_name);
    stream.finish(mark);
    stream.flush().await?;
    let mut taking = true;
    loop {
        let chunk = stream.read_packet().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        if taking && data.send(Ok(chunk)).await.is_err() {
            taking = false;
        }
    }
}
