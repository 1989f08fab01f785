//! Typed settings, layered: built-in defaults → TOML file → `HEARTBEATD_<KEY>` environment
//! variables → command-line flags. Anything wrong is a [`SettingsError`] that names the key
//! and where it came from; the daemon then exits 2 without starting.

mod bounds;
mod env;
mod keys;
mod load;
mod values;

#[cfg(test)]
mod tests;

pub use env::{ENV_KEYS, ENV_PREFIX};
pub use keys::{HostList, LogFormat, LogLevel, Settings};
pub use load::{load, Loaded, Overrides, SettingsError};
