//! Closed-loop load generator: N connections, each with one message in flight, for a fixed time.
//!
//! Each connection runs on its own thread with a blocking socket: write one message, read until
//! the whole echo (or one HTTP response) is back, record the round trip, repeat. Prints one JSON
//! line: `{"requests": .., "seconds": .., "p50_us": .., "p99_us": ..}`.
//!
//! With `--per-connection graceful|reset` (TCP only) each thread opens a new connection for every
//! message instead, and closes it once the echo is back: `graceful` with a FIN (the client's
//! side then holds the connection in TIME_WAIT), `reset` with SO_LINGER 0 (an RST, no
//! TIME_WAIT). A request's time is then connect, write, echo and close. So that the TIME_WAIT
//! connections of one run exhaust nothing and collide with nothing, each connection is bound to
//! its own source address and port: thread `i` uses addresses 127.(10+i).y.z and 64 ports from
//! 40000, never the ephemeral ports other programs draw from, and each run starts where a run
//! 200 s earlier would have ended (a run uses far fewer than 4 million connections per thread,
//! and TIME_WAIT lasts 60 s).
//!
//! ```text
//! loadgen (--tcp HOST:PORT | --unix PATH) [--conns 10] [--size 1024] [--seconds 3] [--http]
//!         [--per-connection graceful|reset]
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroloop_bench::{parse_args, quantile};

trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

fn connect(args: &std::collections::HashMap<String, String>) -> std::io::Result<Box<dyn Conn>> {
    if let Some(addr) = args.get("tcp") {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    } else if let Some(path) = args.get("unix") {
        Ok(Box::new(UnixStream::connect(path)?))
    } else {
        Err(std::io::Error::other("--tcp or --unix is required"))
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body; `buf` keeps what follows it.
fn read_http_response(conn: &mut dyn Conn, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            if buf.len() >= total {
                buf.drain(..total);
                return Ok(());
            }
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn run_connection(
    args: &std::collections::HashMap<String, String>,
    size: usize,
    http: bool,
    stop: &AtomicBool,
) -> std::io::Result<Vec<u64>> {
    let mut conn = connect(args)?;
    let message: Vec<u8> = if http {
        b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: loadgen\r\n\r\n".to_vec()
    } else {
        (0..size).map(|i| b'a' + u8::try_from(i % 26).unwrap_or(0)).collect()
    };
    let mut reply = vec![0u8; message.len()];
    let mut pending = Vec::new();
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        conn.write_all(&message)?;
        if http {
            read_http_response(conn.as_mut(), &mut pending)?;
        } else {
            conn.read_exact(&mut reply)?;
        }
        #[allow(clippy::cast_possible_truncation)]
        samples.push(start.elapsed().as_nanos() as u64);
    }
    Ok(samples)
}

/// How a connection of `--per-connection` ends.
#[derive(Clone, Copy)]
enum Close {
    Graceful,
    Reset,
}

/// Source ports per address, from `FIRST_PORT`.
const PORTS: u32 = 64;
const FIRST_PORT: u32 = 40_000;
/// Source addresses per thread: 127.(10+i).y.z with y and z in 1..=254.
const ADDRESSES: u32 = 254 * 254;

/// The `k`th source address and port of thread `thread`.
fn source(thread: usize, k: u32) -> std::net::SocketAddrV4 {
    let slot = k % (PORTS * ADDRESSES);
    let (address, port) = (slot / PORTS, slot % PORTS);
    let second = u8::try_from(10 + thread % 200).unwrap_or(10);
    let (y, z) = (u8::try_from(1 + address / 254).unwrap_or(1), u8::try_from(1 + address % 254).unwrap_or(1));
    std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(127, second, y, z),
        u16::try_from(FIRST_PORT + port).unwrap_or(40_000),
    )
}

/// A TCP connection from `from` to `to` (both IPv4), with TCP_NODELAY.
fn connect_from(from: std::net::SocketAddrV4, to: std::net::SocketAddrV4) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap_or(16);
    // SAFETY: a new descriptor, owned by the TcpStream made from it (which closes it, also on
    // the error paths below); the addresses are valid sockaddr_in values for their length.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let size = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), size);
        // A server that stops answering (one out of descriptors, say) ends the run in seconds,
        // not at the kernel's connect and read timeouts: the connect, the write and the read.
        let limit = libc::timeval { tv_sec: 2, tv_usec: 0 };
        let tv = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>()).unwrap_or(16);
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&raw const limit).cast(), tv);
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const limit).cast(), tv);
        let (from, to) = (sockaddr(from), sockaddr(to));
        if libc::bind(fd, (&raw const from).cast(), len) != 0 || libc::connect(fd, (&raw const to).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Ends `stream` with an RST instead of a FIN (SO_LINGER with a zero timeout, then close).
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    let size = libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8);
    // SAFETY: sets an option on a live descriptor, closed when `stream` drops.
    unsafe {
        libc::setsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&raw const linger).cast(), size)
    };
}

/// `--per-connection`: a new connection per message, from this thread's own source addresses.
fn run_connections(
    to: std::net::SocketAddrV4,
    thread: usize,
    size: usize,
    close: Close,
    stop: &AtomicBool,
) -> std::io::Result<Vec<u64>> {
    let message: Vec<u8> = (0..size).map(|i| b'a' + u8::try_from(i % 26).unwrap_or(0)).collect();
    let mut reply = vec![0u8; size];
    let mut samples = Vec::new();
    // Where a run 200 s earlier would have ended, at up to 20,000 connections a second.
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut k = u32::try_from((epoch.as_secs() % 1_000_000) * 20_000 % u64::from(PORTS * ADDRESSES)).unwrap_or(0);
    let mut collisions = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        k = k.wrapping_add(1);
        let mut conn = match connect_from(source(thread, k), to) {
            Ok(c) => c,
            // A source still in TIME_WAIT with this server: the next one.
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) || e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                collisions += 1;
                if collisions > 1000 {
                    return Err(e);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        conn.write_all(&message)?;
        conn.read_exact(&mut reply)?;
        match close {
            Close::Graceful => drop(conn),
            Close::Reset => reset(conn),
        }
        #[allow(clippy::cast_possible_truncation)]
        samples.push(start.elapsed().as_nanos() as u64);
    }
    Ok(samples)
}

fn main() {
    let args = Arc::new(parse_args());
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let conns: usize = get("conns", "10").parse().unwrap_or(10);
    let size: usize = get("size", "1024").parse().unwrap_or(1024);
    let seconds: f64 = get("seconds", "3").parse().unwrap_or(3.0);
    let http = args.contains_key("http");
    let per_connection = match args.get("per-connection").map(String::as_str) {
        None => None,
        Some("graceful") => Some(Close::Graceful),
        Some("reset") => Some(Close::Reset),
        Some(other) => {
            eprintln!("loadgen: --per-connection takes graceful or reset, not {other}");
            std::process::exit(2);
        }
    };
    let target = match (per_connection, args.get("tcp").map(|a| a.parse::<std::net::SocketAddrV4>())) {
        (None, _) => None,
        (Some(_), Some(Ok(to))) => Some(to),
        (Some(_), _) => {
            eprintln!("loadgen: --per-connection needs --tcp with an IPv4 address");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|thread| {
            let (args, stop) = (Arc::clone(&args), Arc::clone(&stop));
            std::thread::spawn(move || match (per_connection, target) {
                (Some(close), Some(to)) => run_connections(to, thread, size, close, &stop),
                _ => run_connection(&args, size, http, &stop),
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut errors = 0;
    for w in workers {
        match w.join() {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => {
                eprintln!("loadgen: connection failed: {e}");
                errors += 1;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    samples.sort_unstable();
    println!(
        "{{\"requests\": {}, \"seconds\": {elapsed:.4}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"errors\": {errors}}}",
        samples.len(),
        quantile(&samples, 0.5) as f64 / 1e3,
        quantile(&samples, 0.99) as f64 / 1e3,
    );
    if errors > 0 {
        std::process::exit(1);
    }
}
