//! Closed-loop load generator: N connections, each with one message in flight, for a fixed time.
//!
//! Each connection runs on its own thread with a blocking socket: write one message, read until
//! the whole echo (or one HTTP response) is back, record the round trip, repeat. Prints one JSON
//! line: `{"requests": .., "seconds": .., "p50_us": .., "p99_us": ..}`.
//!
//! ```text
//! loadgen (--tcp HOST:PORT | --unix PATH) [--conns 10] [--size 1024] [--seconds 3] [--http]
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

fn main() {
    let args = Arc::new(parse_args());
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let conns: usize = get("conns", "10").parse().unwrap_or(10);
    let size: usize = get("size", "1024").parse().unwrap_or(1024);
    let seconds: f64 = get("seconds", "3").parse().unwrap_or(3.0);
    let http = args.contains_key("http");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (args, stop) = (Arc::clone(&args), Arc::clone(&stop));
            std::thread::spawn(move || run_connection(&args, size, http, &stop))
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
