//! One keep-alive HTTP/1.1 connection that sends pre-serialised requests and reads only what
//! it needs of each answer: the status code, `Content-Length`, and `Connection: close`.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the load goes: an `http://host:port/path` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`; HTTPS is not supported (heartbeatd serves plain HTTP).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/heartbeat"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse().map_err(|_| format!("--url {url:?}: bad port {port:?}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("--url {url:?}: no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The complete bytes of a `POST` of `body` to this target.
    pub fn post_bytes(&self, body: &[u8]) -> Vec<u8> {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

/// What one answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The server will close the connection after this answer.
    pub close: bool,
}

/// Looks for one complete response at the start of `buf`. `Ok(None)`: not complete yet;
/// `Ok(Some((answer, length)))`: the response occupies `buf[..length]`.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    Ok(parse_response_parts(buf)?.map(|(answer, body)| (answer, body.end)))
}

/// Like [`parse_response`], with the range of the body in `buf`.
fn parse_response_parts(buf: &[u8]) -> Result<Option<(Answer, std::ops::Range<usize>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).map_err(|e| format!("bad HTTP response: {e}"))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let mut content_length = 0usize;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("bad Content-Length")?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let total = head_len + content_length;
    Ok((buf.len() >= total).then_some((Answer { status, close }, head_len..total)))
}

/// One request on a connection of its own (admin calls around a run, not the measured load):
/// returns the status and the body.
pub async fn request(
    addr: SocketAddr,
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.host,
        target.port,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut buf = Vec::new();
    loop {
        if let Some((answer, body)) =
            parse_response_parts(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            return Ok((answer.status, buf[body].to_vec()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` and reads its answer.
    pub async fn round_trip(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request).await?;
        loop {
            match parse_response(&self.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Some((answer, length)) => {
                    self.buf.drain(..length);
                    return Ok(answer);
                }
                None => {
                    self.buf.reserve(4096);
                    let n = self.stream.read_buf(&mut self.buf).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8080/heartbeat").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/heartbeat".into()
            }
        );
        assert_eq!(Target::parse("http://localhost").unwrap().port, 80);
        assert_eq!(Target::parse("http://localhost:9").unwrap().path, "/heartbeat");
        assert!(Target::parse("https://x/heartbeat").is_err());
        assert!(Target::parse("http://x:notaport/").is_err());
    }

    #[test]
    fn a_post_carries_its_length() {
        let t = Target::parse("http://h:1/heartbeat").unwrap();
        let bytes = String::from_utf8(t.post_bytes(b"{}")).unwrap();
        assert!(bytes.starts_with("POST /heartbeat HTTP/1.1\r\n"));
        assert!(bytes.contains("Content-Length: 2\r\n"));
        assert!(bytes.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn responses_are_found_whole_or_not_at_all() {
        let full = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\nretry-after: 1\r\n\r\nhelloHTTP/1.1 200";
        let (answer, len) = parse_response(full).unwrap().unwrap();
        assert_eq!(
            answer,
            Answer {
                status: 503,
                close: false
            }
        );
        assert_eq!(&full[len..], b"HTTP/1.1 200", "the next response stays in the buffer");

        assert_eq!(parse_response(&full[..20]).unwrap(), None, "partial head");
        assert_eq!(parse_response(&full[..len - 1]).unwrap(), None, "partial body");

        let closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_response(closing).unwrap().unwrap().0.close);
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
