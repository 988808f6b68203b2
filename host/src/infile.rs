//! LOAD DATA LOCAL INFILE across the gateway: a backend's request for a client file is answered
//! by the client of the session whose statement made it, chunk by chunk, in bounded memory.
//!
//! The driver asks a handler registered on every backend connection ([`backend_handler`]) for
//! the file's contents. The handler takes the [`FileRequest`] the session put around that one
//! statement ([`answering`], a task-local), so only the session running a LOAD DATA LOCAL can
//! answer; a request nobody expects fails (the driver then drops that connection).

use std::cell::Cell;
use std::io;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use mysql_async::{InfileData, LocalInfileError};
use tokio::sync::{mpsc, oneshot};

/// Chunks of the file in flight between the client and the backend.
const IN_FLIGHT: usize = 4;

/// The backend's side: where the file name goes and the contents come from.
pub struct FileRequest {
    name: oneshot::Sender<Vec<u8>>,
    data: mpsc::Receiver<io::Result<Bytes>>,
}

/// The session's side: the file name the backend asked for, and where the client's chunks go
/// (dropping the sender ends the file).
pub struct FileRelay {
    pub name: oneshot::Receiver<Vec<u8>>,
    pub data: mpsc::Sender<io::Result<Bytes>>,
}

/// A request and its relay, joined.
pub fn channel() -> (FileRequest, FileRelay) {
    let (name_tx, name_rx) = oneshot::channel();
    let (data_tx, data_rx) = mpsc::channel(IN_FLIGHT);
    (
        FileRequest {
            name: name_tx,
            data: data_rx,
        },
        FileRelay {
            name: name_rx,
            data: data_tx,
        },
    )
}

tokio::task_local! {
    static REQUEST: Cell<Option<FileRequest>>;
}

/// Runs `statement` able to answer one file request of its backend.
pub async fn answering<F: Future>(request: FileRequest, statement: F) -> F::Output {
    REQUEST.scope(Cell::new(Some(request)), statement).await
}

/// The handler every backend connection is opened with (see the module doc).
pub fn backend_handler(
    file_name: &[u8],
) -> BoxFuture<'static, Result<InfileData, LocalInfileError>> {
    let request = REQUEST.try_with(Cell::take).ok().flatten();
    let name = file_name.to_vec();
    async move {
        let FileRequest { name: tx, data } = request.ok_or(LocalInfileError::NoHandler)?;
        let _ = tx.send(name);
        let chunks = futures_util::stream::unfold(data, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        Ok(chunks.boxed())
    }
    .boxed()
}
