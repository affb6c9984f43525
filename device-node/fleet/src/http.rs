//! The one HTTP/1.1 client of the simulator, the demo and the bridge's tests and
//! benchmarks: a request over a real socket, written in one segment (head and body
//! apart would meet Nagle and delayed ACKs).
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An answer: status, headers (names in lowercase), body (de-chunked).
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

fn request_bytes(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// One request on a connection of its own (`Connection: close`), read to its end.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&request_bytes(
        method,
        path,
        &addr.to_string(),
        headers,
        body,
        true,
    ))
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete response head"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = status_of(lines.next().unwrap_or_default())?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn status_of(line: &str) -> io::Result<u16> {
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))
}

fn dechunk(mut b: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("a chunk without its size line"))?;
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| bad("a chunk size that is not hex"))?;
        if size == 0 {
            return Ok(out);
        }
        let data = b
            .get(eol + 2..eol + 2 + size)
            .ok_or_else(|| bad("a chunk shorter than its size"))?;
        out.extend_from_slice(data);
        b = b.get(eol + 4 + size..).unwrap_or_default();
    }
}

/// One keep-alive HTTP/1.1 connection, for many requests one after another.
pub struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    /// Connects.
    pub async fn new(addr: SocketAddr) -> io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::new(s),
        })
    }

    /// POSTs JSON with an Authorization header; returns the status and the body (the
    /// answer must carry a Content-Length, as the bridge's do).
    pub async fn post(
        &mut self,
        path: &str,
        authorization: &str,
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        let headers = [
            ("Authorization", authorization),
            ("Content-Type", "application/json"),
        ];
        let request = request_bytes("POST", path, "x", &headers, body, false);
        self.r.get_mut().write_all(&request).await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        let status = status_of(&line)?;
        let mut len = 0;
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(bad("the connection closed inside the head"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_broken_ones_refused() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"zz\r\nabc").is_err());
        assert!(dechunk(b"9\r\nabc\r\n").is_err());
    }
}
