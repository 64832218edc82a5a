//! HTTP/1.1 by hand over TCP: send exact bytes, read back what the server answered.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Parsed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Parses one response from the start of `buf`: `Some((response, bytes used))`, or `None` if
/// more bytes are needed (or they are not HTTP/1).
pub fn parse_response(buf: &[u8]) -> Option<(Parsed, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")?
        .get(2..5)?
        .parse()
        .ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut parsed = Parsed {
        status,
        headers,
        body: Vec::new(),
    };
    let mut at = end + 4;
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((parsed, at));
    }
    if let Some(length) = parsed.header("content-length") {
        let length: usize = length.parse().ok()?;
        let body = buf.get(at..at + length)?;
        parsed.body = body.to_vec();
        return Some((parsed, at + length));
    }
    if parsed
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&buf[at..line_end]).ok()?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailers, then an empty line.
                let rest = &buf[at..];
                let trailer_end = if rest.starts_with(b"\r\n") {
                    2
                } else {
                    rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4
                };
                return Some((parsed, at + trailer_end));
            }
            parsed.body.extend_from_slice(buf.get(at..at + size)?);
            at += size + 2;
            if buf.len() < at {
                return None;
            }
        }
    }
    // No framing: the body runs to the end of the connection (never from hyper).
    None
}

/// What came back on one connection.
#[derive(Debug)]
pub struct Outcome {
    pub responses: Vec<Parsed>,
    /// The server closed (or reset) the connection.
    pub closed: bool,
    /// Bytes after the last whole response.
    pub leftover: Vec<u8>,
    /// From connecting until the close, or until the last response.
    pub elapsed: Duration,
}

/// Writes `request` on a fresh connection and reads until the server closes it (or 5 s
/// pass); returns what was read.
pub async fn round_trip(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects, writes `request` (write errors ignored: the server may close first) and reads
/// until `want` responses arrived, the server closed, or `deadline` passed.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    want: usize,
    deadline: Duration,
) -> Outcome {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let writer = async {
        let _ = stream.write_all(request).await;
    };
    // Write with a bound: a server that stopped reading must not hang the test.
    let _ = tokio::time::timeout(deadline, writer).await;
    read_responses(&mut stream, want, start, start + deadline).await
}

/// Reads responses from `stream` until `want` of them, a close, or `until`.
pub async fn read_responses(
    stream: &mut TcpStream,
    want: usize,
    start: Instant,
    until: Instant,
) -> Outcome {
    let mut buf = Vec::new();
    let mut responses = Vec::new();
    let mut closed = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some((parsed, used)) = parse_response(&buf) {
            responses.push(parsed);
            buf.drain(..used);
        }
        if responses.len() >= want {
            break;
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Outcome {
        responses,
        closed,
        leftover: buf,
        elapsed: start.elapsed(),
    }
}

/// A TCP connection to `addr` from the local address `from` (any address of 127.0.0.0/8 works
/// on loopback).
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = if from.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    let stream = socket.connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A keep-alive HTTP/1.1 client on one connection: one request, one response, in turn.
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends `request` and reads its response; `None` if the connection closed first.
    pub async fn send(&mut self, request: &[u8]) -> Option<Parsed> {
        self.stream.write_all(request).await.ok()?;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if let Some((parsed, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return Some(parsed);
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
