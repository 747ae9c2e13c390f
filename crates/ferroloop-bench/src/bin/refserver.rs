//! The reference server: echo or a fixed HTTP/1.1 response, in Rust with no Python, on one
//! thread with ferroloop-core's poller. It is the ceiling a loop's server can approach here.
//!
//! ```text
//! refserver (--tcp HOST:PORT | --unix PATH) [--http]
//! ```
//! Prints `READY` once listening.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;

use ferroloop_bench::parse_args;
use ferroloop_core::poller::{Interest, Poller};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello World!";

trait Stream: Read + Write + AsRawFd {}
impl<T: Read + Write + AsRawFd> Stream for T {}

struct Client {
    stream: Box<dyn Stream>,
    /// Bytes to send back that the socket has not taken yet.
    out: Vec<u8>,
    /// HTTP mode: request bytes not yet parsed.
    inbuf: Vec<u8>,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Box::new(s))
            }
            Self::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                Ok(Box::new(s))
            }
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Self::Tcp(l) => l.as_raw_fd(),
            Self::Unix(l) => l.as_raw_fd(),
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = parse_args();
    let http = args.contains_key("http");
    let listener = if let Some(addr) = args.get("tcp") {
        Listener::Tcp(TcpListener::bind(addr)?)
    } else if let Some(path) = args.get("unix") {
        let _ = std::fs::remove_file(path);
        Listener::Unix(UnixListener::bind(path)?)
    } else {
        return Err(std::io::Error::other("--tcp or --unix is required"));
    };
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true)?,
        Listener::Unix(l) => l.set_nonblocking(true)?,
    }
    let mut poller = Poller::new()?;
    poller.set_interest(listener.fd(), Interest { read: true, write: false })?;
    println!("READY");
    let mut clients: HashMap<RawFd, Client> = HashMap::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        poller.poll(None)?;
        let ready: Vec<_> = poller.ready().collect();
        for ev in ready {
            if ev.fd == listener.fd() {
                while let Ok(stream) = listener.accept() {
                    let fd = stream.as_raw_fd();
                    poller.set_interest(fd, Interest { read: true, write: false })?;
                    clients.insert(fd, Client { stream, out: Vec::new(), inbuf: Vec::new() });
                }
                continue;
            }
            let Some(client) = clients.get_mut(&ev.fd) else { continue };
            let mut closed = false;
            if ev.readable {
                match client.stream.read(&mut buf) {
                    Ok(0) => closed = true,
                    Ok(n) if http => {
                        client.inbuf.extend_from_slice(&buf[..n]);
                        while let Some(end) = client.inbuf.windows(4).position(|w| w == b"\r\n\r\n") {
                            client.inbuf.drain(..end + 4);
                            client.out.extend_from_slice(RESPONSE);
                        }
                    }
                    Ok(n) => client.out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
            if !closed && !client.out.is_empty() {
                match client.stream.write(&client.out) {
                    Ok(n) => {
                        client.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
            }
            if closed {
                poller.set_interest(ev.fd, Interest::NONE)?;
                clients.remove(&ev.fd);
            } else {
                let want_write = !client.out.is_empty();
                poller.set_interest(ev.fd, Interest { read: true, write: want_write })?;
            }
        }
    }
}
