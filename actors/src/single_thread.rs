//! Starting an actor that already holds its state on a thread of its own (a one-thread
//! SyncArbiter): the Store and the JournalWriter block on fsync, so they must not share the
//! event loop of the actors that answer HTTP requests.

use actix::prelude::*;

/// Starts `actor` on a new thread. SyncArbiter takes a factory; it runs once, on the new
/// thread, and is never called again because these actors never stop themselves (a
/// SyncContext would restart a stopped one with the factory).
pub fn start_on_own_thread<A>(actor: A) -> Addr<A>
where
    A: Actor<Context = SyncContext<A>> + Send,
{
    let cell = std::sync::Mutex::new(Some(actor));
    SyncArbiter::start(1, move || {
        cell.lock()
            .ok()
            .and_then(|mut c| c.take())
            .expect("an actor on its own thread is started once")
    })
}
