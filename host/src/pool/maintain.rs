//! Pool upkeep off the data path: once a second per backend, close the idle connections that
//! are due (idle timeout above `pool-min`, past their lifetime, of an older generation) and open
//! warm ones up to `pool-min`.

use std::sync::Arc;
use std::time::Duration;

use super::Backend;

/// Looks after `backend`'s pool until `shutdown` turns true or a reload removes it.
pub async fn run(backend: Arc<Backend>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        // Removed by a reload: its connections close as they come back (the drain).
        if *shutdown.borrow() || backend.is_retired() {
            return;
        }
        backend.maintain().await;
    }
}
