//! Telling people: the actors that push what happens to agents out of heartbeatd. Liveness
//! (transitions) and supervision (process changes, `fatal`) both use them.
//!
//! | module | what |
//! |---|---|
//! | [`webhook`] | the Webhook actor: POSTs liveness transitions and process changes to `webhook_url` |
//! | [`alerter`] | the Alerter actor: pushes `HeartbeatAgentDown` and `HeartbeatAgentFatal` to `alertmanager_url`, keeps them in `alerts.json` |
//! | `alert_backlog` | what is still to reach each Alertmanager: the newest state of each alert |
//! | `delivery` | one POST of JSON with retries, shared by both |

mod alert_backlog;
pub mod alerter;
mod delivery;
pub mod webhook;
