//! Measuring heartbeatd, kept out of the daemon: its dependencies (tokio's client side,
//! `hdrhistogram`, `httparse`) are not the daemon's.
//!
//! | part | what |
//! |---|---|
//! | [`load`] and `heartbeatd-load` | the load generator |
//! | `heartbeatd-ceiling` | the HTTP layer's ceiling: actix-web with heartbeatd's parse, nothing else |
//! | `scenarios/` (`make bench`) | the scenarios, one file each, on the shared harness |
//! | `tests/` | the load tool against the real daemon |

pub mod load;
