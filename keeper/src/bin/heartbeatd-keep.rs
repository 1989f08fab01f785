//! `heartbeatd-keep`: the keeper heartbeatd runs beside each supervised agent (see the
//! library's documentation). It is started by heartbeatd only, with its argv[0] set to
//! `heartbeatd-keep <agent id>` so that `ps` names the agent it keeps.

fn main() -> std::process::ExitCode {
    heartbeatd_keep::run()
}
