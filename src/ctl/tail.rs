//! `heartbeatd ctl tail ID [-n N] [-f]`: the end of an agent's output, then (with `-f`) every
//! new byte exactly once, by byte offset through `GET /agents/{id}/log`, across rotations
//! and restarts, like `tail -F`.

use std::io::{self, Write};
use std::time::Duration;

use serde_json::Value;

use super::transport::{refusal, Target};
use super::CtlError;

/// How often a follower asks when there was nothing new.
const POLL: Duration = Duration::from_millis(500);
/// The most text one answer carries (the daemon's cap).
const CHUNK: usize = 1 << 20;

/// Where the next read starts.
struct Cursor {
    file: String,
    offset: u64,
}

pub fn run(target: &Target, id: &str, lines: usize, follow: bool) -> Result<(), CtlError> {
    let lines = lines.clamp(1, 10_000);
    let mut out = io::stdout().lock();
    let first = read(target, &format!("/agents/{id}/log?lines={lines}&length={CHUNK}"))?;
    let mut cursor = print(&mut out, first.as_ref())?;
    if !follow {
        return Ok(());
    }
    loop {
        let answer = match &cursor {
            Some(at) => read(
                target,
                &format!("/agents/{id}/log?file={}&offset={}&length={CHUNK}", at.file, at.offset),
            )?,
            // No output file yet: wait for the first line.
            None => read(target, &format!("/agents/{id}/log?offset=0&length={CHUNK}"))?,
        };
        if let Some(skipped) = answer.as_ref().and_then(|log| log["skipped"].as_str()) {
            eprintln!("heartbeatd ctl: some output was missed ({skipped}); going on from the oldest kept");
        }
        let next = print(&mut out, answer.as_ref())?;
        let moved = match (&next, &cursor) {
            (Some(next), Some(at)) => next.file != at.file || next.offset != at.offset,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if next.is_some() {
            cursor = next;
        }
        if !moved {
            std::thread::sleep(POLL);
        }
    }
}

/// One read; `None` while the agent has no output file. A busy daemon (429) is waited for.
fn read(target: &Target, path: &str) -> Result<Option<Value>, CtlError> {
    loop {
        let (status, body) = target.call("GET", path, None)?;
        match status {
            200 => return Ok(Some(body["log"].clone()).filter(|log| !log.is_null())),
            429 => std::thread::sleep(Duration::from_secs(1)),
            _ => return Err(refusal(status, &body)),
        }
    }
}

/// Prints an answer's text (control characters escaped: [`super::printable`]); answers where
/// to read next.
fn print(out: &mut impl Write, log: Option<&Value>) -> Result<Option<Cursor>, CtlError> {
    let Some(log) = log else { return Ok(None) };
    if let Some(data) = log["data"].as_str() {
        out.write_all(super::printable(data).as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| CtlError::Unreachable(format!("cannot write the output: {e}")))?;
    }
    Ok(Some(Cursor {
        file: log["next_file"].as_str().unwrap_or_default().to_owned(),
        offset: log["next_offset"].as_u64().unwrap_or(0),
    }))
}
