//! The socket coroutines' engine: `loop.sock_recv`, `sock_recv_into`, `sock_sendall`,
//! `sock_accept` and the wait of `sock_connect`.
//!
//! The coroutines stay `async def` methods in Python (`_loop.py`), so `create_task` takes them;
//! each calls one method here (`EventLoop._sock_recv` and friends), which:
//!
//! 1. declines with `NotImplemented` unless the socket's type is exactly `socket.socket`: the
//!    Python code then runs asyncio's algorithm through the socket's own methods, so a subclass
//!    overriding `recv` (or an `SSLSocket`, refused with `TypeError`) behaves as on asyncio;
//! 2. makes asyncio's debug-mode check (`the socket must be non-blocking`);
//! 3. tries the operation at once: `recv(2)`/`send(2)` (`MSG_NOSIGNAL`) on `sock.fileno()`, or
//!    the socket's `accept()`/`connect()` (they build Python objects and parse addresses);
//! 4. returns the result if it completed, raises its `OSError` (errno and message as the socket
//!    module's) if it failed, and otherwise registers a [`SockOp`] for the descriptor and returns
//!    a new `asyncio.Future` for the coroutine to await.
//!
//! A [`SockOp`] retries the operation whenever the descriptor is reported ready: would block →
//! keeps waiting; result or error → stops watching, then completes the future. If the future is
//! already done (its task was cancelled), it stops watching without touching the socket, so data
//! that arrived meanwhile stays for the next operation. If the socket was closed while waiting
//! (its `fileno()` is no longer the descriptor), the number may belong to another file by now:
//! the operation fails with `EBADF`, as the socket's own method would, without touching it.
//!
//! Invariants:
//! - A `SockOp` only ever removes its own registration: the loop compares the watcher's address
//!   (`EventLoop::remove_op`), since `add_reader` or another operation on the same descriptor may
//!   have replaced it, as on asyncio.
//! - Cancellation: the future is awaited by the Python coroutine and by nothing else, so a task's
//!   cancellation (or the coroutine's closing) always passes through that coroutine's `await`:
//!   it then calls `EventLoop._sock_abandon(sock, fut)`, which removes the wait completing
//!   `fut` (compared by identity: the coroutine holds `fut`, so the address cannot be reused),
//!   if it still waits. This replaces asyncio's done callback, which costs an object, an
//!   `add_done_callback` and a `remove_done_callback` (or a scheduled call) per wait. A future
//!   cancelled by any other route is noticed at the next readiness report (`io_ready` checks
//!   `done()` first), which removes the wait then.
//! - Registrations use the poller's `Mode::Once`: edge-triggered, and kept when the wait ends.
//!   A socket object waited on again, still open under the number it last registered, reuses
//!   its registration without any system call (the loop vouches for it, see
//!   `EventLoop::add_op`); any other registers with one verifying `EPOLL_CTL_MOD` (`ADD` for a
//!   new number). asyncio's selector loop makes an `ADD` and a `DEL` per wait. Why kept
//!   registrations are safe when sockets are closed and their numbers reused is in
//!   `ferroloop_core::poller`.
//! - Edge-triggered reports only what happens after registration, so a wait is registered only
//!   after the call it retries would block (`EAGAIN`, never `EINTR`, which is retried at once;
//!   `sendall` sends until the socket would block), within the same Rust call, with no poll in
//!   between: whatever arrives later is reported. A retry that would block keeps waiting under
//!   the same rule.
//! - `sock_recv_into` acquires the caller's buffer at each attempt (as `sock.recv_into` would);
//!   `sock_sendall` holds its export for the whole operation (as asyncio's `memoryview(data)`
//!   does) and sends from it directly, without a copy. Python memory is only ever handed to the
//!   kernel as raw pointers while the GIL is held; a buffer that cannot be exported the simple
//!   way goes to the socket's own method, which raises the socket module's exact error.
//! - No Python code runs, and no Python object is created or dropped, while a `GilCell` borrow is
//!   held (see `gil_cell`).

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::net;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple};
use pyo3::{ffi, intern, PyTraverseError, PyVisit};

use crate::buffers::Export;
use crate::errors::{os_error, would_block};
use crate::event_loop::EventLoop;
use crate::gil_cell::GilCell;
use crate::watch::IoWatcher;

/// `sock_recv` requests up to this size are received into a reused buffer, then copied.
const RECV_BUF: usize = 256 * 1024;

thread_local! {
    /// Where `sock_recv` receives before copying into a `bytes` of the right size.
    static RECV_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `sock.fileno()` for a `socket.socket`, through the method's descriptor (`_socket.socket`'s,
/// which `socket.socket` does not override), without looking it up on each call.
fn fileno(sock: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    static CELL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = sock.py();
    let method = CELL.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("_socket")?.getattr("socket")?.getattr("fileno")?.unbind())
    })?;
    let args = [sock.as_ptr()];
    // SAFETY: `method` and `sock` are live objects (GIL held); the argument array outlives the
    // call, which takes one positional argument and no keywords.
    let res = unsafe { ffi::PyObject_Vectorcall(method.as_ptr(), args.as_ptr(), 1, std::ptr::null_mut()) };
    // SAFETY: a new reference or NULL with an exception set, as the call returned it.
    unsafe { Bound::from_owned_ptr_or_err(py, res) }?.extract()
}

/// Calls `f` again while it fails with `EINTR`.
fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Calls a socket method again while it raises `InterruptedError`.
fn retry_interrupted<'py>(
    py: Python<'py>,
    mut f: impl FnMut() -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    loop {
        match f() {
            Err(e) if e.is_instance_of::<PyInterruptedError>(py) => {}
            r => return r,
        }
    }
}

/// Sends `export[pos..]` until all of it is sent or the socket would block; returns the new
/// position.
fn send_until_blocked(fd: RawFd, export: &Export, mut pos: usize) -> io::Result<usize> {
    let len = export.len();
    while pos < len {
        // SAFETY: the export is held by the caller, `len` bytes long, and `pos < len`.
        match unsafe { net::send_raw(fd, export.ptr().add(pos), len - pos) } {
            Ok(0) => break,
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(pos)
}

/// What a pending operation does at each readiness report.
enum Kind {
    /// `recv(n)`.
    Recv(usize),
    /// `recv_into(buffer)`: the object, whose buffer is acquired at each attempt.
    RecvInto(Py<PyAny>),
    /// `sendall(data)`: the object, its export, and how much of it is sent.
    SendAll { data: Py<PyAny>, export: Export, sent: GilCell<usize> },
    /// `accept()`.
    Accept,
    /// The end of a non-blocking `connect(address)`.
    Connect(Py<PyAny>),
}

/// A pending socket operation, watching its descriptor in one direction (see the module docs).
pub(crate) struct SockOp {
    event_loop: Py<EventLoop>,
    sock: Py<PyAny>,
    fd: RawFd,
    write: bool,
    fut: Py<PyAny>,
    kind: Kind,
}

/// An attempt's outcome: `None` would block.
type Attempt = PyResult<Option<Py<PyAny>>>;

impl SockOp {
    /// Stops watching, if this operation still is what watches its descriptor.
    fn unregister(&self, py: Python<'_>) -> PyResult<()> {
        let me: *const Self = self;
        self.event_loop.get().remove_op(py, self.fd, self.write, me.cast())?;
        Ok(())
    }

    fn attempt(&self, py: Python<'_>) -> Attempt {
        let sock = self.sock.bind(py);
        match &self.kind {
            Kind::Recv(n) => try_recv(sock, self.fd, *n),
            Kind::RecvInto(buf) => try_recv_into(sock, self.fd, buf.bind(py)),
            Kind::SendAll { export, sent, .. } => {
                let start = *sent.borrow(py);
                let pos = send_until_blocked(self.fd, export, start).map_err(|e| os_error(&e))?;
                *sent.borrow_mut(py) = pos;
                Ok((pos >= export.len()).then(|| py.None()))
            }
            Kind::Accept => try_accept(sock),
            Kind::Connect(address) => match net::take_socket_error(self.fd) {
                Ok(0) => Ok(Some(py.None())),
                Ok(libc::EINPROGRESS | libc::EALREADY | libc::EINTR | libc::EAGAIN) => Ok(None),
                Ok(code) => {
                    let msg = format!("Connect call failed {}", address.bind(py).str()?);
                    Err(PyOSError::new_err((code, msg)))
                }
                Err(e) => Err(os_error(&e)),
            },
        }
    }
}

impl IoWatcher for SockOp {
    fn io_ready(&self, py: Python<'_>, _write: bool) -> PyResult<()> {
        let fut = self.fut.bind(py);
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            // Cancelled: the done callback may not have run yet. Do not touch the socket.
            return self.unregister(py);
        }
        // Closed (or detached) while waiting: the number may belong to another file by now, which
        // must not be read from or written to. The socket's own method would raise EBADF.
        let result = if fileno(self.sock.bind(py))? != self.fd {
            Err(os_error(&io::Error::from_raw_os_error(libc::EBADF)))
        } else {
            self.attempt(py)
        };
        let result = match result {
            Ok(None) => return Ok(()),
            Ok(Some(v)) => Ok(v),
            Err(e) if crate::errors::is_exit(py, &e) => return Err(e),
            Err(e) => Err(e),
        };
        self.unregister(py)?;
        match result {
            Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,))?,
            Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        Ok(())
    }

    fn traverse(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.sock)?;
        visit.call(&self.fut)?;
        match &self.kind {
            Kind::RecvInto(o) | Kind::SendAll { data: o, .. } | Kind::Connect(o) => visit.call(o)?,
            Kind::Recv(_) | Kind::Accept => {}
        }
        Ok(())
    }

    fn completes(&self, fut: &Bound<'_, PyAny>) -> bool {
        self.fut.as_ptr() == fut.as_ptr()
    }
}

/// One `recv(fd, n)`: the bytes received, `None` if it would block.
fn try_recv(sock: &Bound<'_, PyAny>, fd: RawFd, n: usize) -> Attempt {
    let py = sock.py();
    if n == 0 {
        // As `socket.recv(0)`: empty at once, without asking the kernel (which would wait).
        return Ok(Some(PyBytes::new(py, b"").into_any().unbind()));
    }
    let mut big: Vec<u8> = Vec::new();
    if n > RECV_BUF && big.try_reserve_exact(n).is_err() {
        // More than can be allocated: the socket's own method raises the socket module's error
        // (`MemoryError`, or `OverflowError` past the largest `bytes`).
        return python_attempt(py, retry_interrupted(py, || sock.call_method1(intern!(py, "recv"), (n,))));
    }
    let res = if n <= RECV_BUF {
        RECV_SCRATCH.with(|cell| {
            // Re-entered (a finalizer run by an allocation below called sock_recv): use a
            // buffer of its own.
            let mut fallback = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let buf: &mut Vec<u8> = match guard.as_mut() {
                Ok(b) => b,
                Err(_) => &mut fallback,
            };
            if buf.len() < n {
                buf.resize(RECV_BUF, 0);
            }
            retry_eintr(|| net::recv(fd, &mut buf[..n])).map(|got| PyBytes::new(py, &buf[..got]))
        })
    } else {
        let mut buf = big;
        // SAFETY: the vector's spare capacity is `n` writable bytes (reserved above).
        retry_eintr(|| unsafe { net::recv_raw(fd, buf.as_mut_ptr(), n) }).map(|got| {
            // SAFETY: recv initialised the first `got <= n` bytes.
            unsafe { buf.set_len(got) };
            PyBytes::new(py, &buf)
        })
    };
    match res {
        Ok(b) => Ok(Some(b.into_any().unbind())),
        Err(e) if would_block(&e) => Ok(None),
        Err(e) => Err(os_error(&e)),
    }
}

/// One `recv_into(buf)`: the byte count, `None` if it would block.
fn try_recv_into(sock: &Bound<'_, PyAny>, fd: RawFd, buf: &Bound<'_, PyAny>) -> Attempt {
    let py = sock.py();
    let Ok(export) = Export::writable(buf) else {
        // Not a writable contiguous buffer: the socket's own method raises the exact error.
        return python_attempt(py, retry_interrupted(py, || sock.call_method1(intern!(py, "recv_into"), (buf,))));
    };
    if export.len() == 0 {
        // As `socket.recv_into` of an empty buffer: 0 at once.
        return Ok(Some(0usize.into_pyobject(py)?.into_any().unbind()));
    }
    // SAFETY: the writable export is held for the call and is `len` bytes long.
    let res = retry_eintr(|| unsafe { net::recv_raw(fd, export.ptr(), export.len()) });
    drop(export);
    match res {
        Ok(n) => Ok(Some(n.into_pyobject(py)?.into_any().unbind())),
        Err(e) if would_block(&e) => Ok(None),
        Err(e) => Err(os_error(&e)),
    }
}

/// One `accept()`, then `setblocking(False)` on the new socket, as asyncio does.
fn try_accept(sock: &Bound<'_, PyAny>) -> Attempt {
    let py = sock.py();
    let pair = match retry_interrupted(py, || sock.call_method0(intern!(py, "accept"))) {
        Ok(p) => p,
        Err(e) if e.is_instance_of::<PyBlockingIOError>(py) => return Ok(None),
        Err(e) => return Err(e),
    };
    pair.get_item(0)?.call_method1(intern!(py, "setblocking"), (false,))?;
    Ok(Some(pair.unbind()))
}

/// A server's accept of one IPv4 connection (`_acceptor` in `_network.py`): `accept4` with
/// `SOCK_CLOEXEC`, as the socket module's `_accept()` calls it, and `SOCK_NONBLOCK` (every
/// caller makes the connection non-blocking; a socket object made with `SOCK_NONBLOCK` in its
/// type then has its timeout at 0 without `setblocking`'s `ioctl`), answering `(new_fd, (host,
/// port))` with the address as the socket module writes it (dotted quad, port), `None` when no
/// connection is pending (where `_accept()` raises `BlockingIOError`: an exception, a traceback
/// and a decoded message for every connection a server takes), or the `OSError` `_accept()`
/// raises. An interrupted call is retried after Python's signal handlers ran, as the socket
/// module does.
#[pyfunction]
#[pyo3(name = "_accept_inet")]
pub(crate) fn accept_inet(py: Python<'_>, fd: RawFd) -> PyResult<Option<Py<PyTuple>>> {
    match accept_inet_conn(py, fd)? {
        None => Ok(None),
        Some((conn, address)) => match (conn, address).into_pyobject(py) {
            Ok(pair) => Ok(Some(pair.unbind())),
            Err(e) => {
                // SAFETY: the descriptor just accepted, owned by nothing else yet.
                unsafe { libc::close(conn) };
                Err(e)
            }
        },
    }
}

/// `_accept_inet`'s accept: the new descriptor (the caller's to close) and the peer's address.
pub(crate) fn accept_inet_conn(py: Python<'_>, fd: RawFd) -> PyResult<Option<(RawFd, Bound<'_, PyTuple>)>> {
    loop {
        // SAFETY: a zeroed sockaddr_in is a valid value; `accept4` writes at most `len` bytes of
        // it and the length it wrote.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap_or(16);
        // SAFETY: as above; `fd` is the caller's descriptor, only read from.
        let conn = unsafe {
            libc::accept4(fd, (&raw mut addr).cast(), &raw mut len, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
        };
        if conn >= 0 {
            return match inet_address(py, &addr) {
                Ok(address) => Ok(Some((conn, address))),
                Err(e) => {
                    // SAFETY: the descriptor just accepted, owned by nothing else yet.
                    unsafe { libc::close(conn) };
                    Err(e)
                }
            };
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            py.check_signals()?;
            continue;
        }
        return if would_block(&e) { Ok(None) } else { Err(os_error(&e)) };
    }
}

/// An IPv4 socket address as the socket module gives it: `(host, port)`, the host in dotted
/// quad (what `inet_ntop` writes; formatted here, where `Ipv4Addr`'s `Display` through
/// `core::fmt` cost about 1,300 instructions).
pub(crate) fn inet_address<'py>(py: Python<'py>, addr: &libc::sockaddr_in) -> PyResult<Bound<'py, PyTuple>> {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in u32::from_be(addr.sin_addr.s_addr).to_be_bytes().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            text[len] = b'0' + d;
            len += 1;
        }
    }
    // The bytes are ASCII digits and dots.
    let host = pyo3::types::PyString::new(py, std::str::from_utf8(&text[..len]).unwrap_or_default());
    (host, u16::from_be(addr.sin_port)).into_pyobject(py)
}

/// `sock.getsockname()` of an IPv4 socket, by the descriptor: `None` when it fails or the socket
/// is not IPv4 (the caller then asks the socket object).
pub(crate) fn inet_sockname(py: Python<'_>, fd: RawFd) -> Option<Bound<'_, PyTuple>> {
    // SAFETY: a zeroed sockaddr_in is valid; `getsockname` writes at most `len` bytes.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap_or(16);
    // SAFETY: as above; the descriptor is only read from.
    let ok = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &raw mut len) } == 0;
    if !ok || i32::from(addr.sin_family) != libc::AF_INET {
        return None;
    }
    inet_address(py, &addr).ok()
}

/// A socket method's outcome as an attempt: `BlockingIOError` would block.
fn python_attempt(py: Python<'_>, res: PyResult<Bound<'_, PyAny>>) -> Attempt {
    match res {
        Ok(v) => Ok(Some(v.unbind())),
        Err(e) if e.is_instance_of::<PyBlockingIOError>(py) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Steps 1 and 2 of the module docs: the descriptor, or `None` for the Python path.
fn fast_fd(event_loop: &Bound<'_, EventLoop>, sock: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    let py = sock.py();
    if !sock.get_type().is(crate::pyrefs::socket_type(py)?) {
        return Ok(None);
    }
    if event_loop.get().debug() {
        let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
        if !timeout.eq(0)? {
            return Err(PyValueError::new_err("the socket must be non-blocking"));
        }
    }
    Ok(Some(fileno(sock)?))
}

/// Step 4: registers `kind` for `fd` and returns the future it completes.
fn start(
    event_loop: &Bound<'_, EventLoop>,
    sock: &Bound<'_, PyAny>,
    fd: RawFd,
    write: bool,
    kind: Kind,
) -> PyResult<Py<PyAny>> {
    let py = event_loop.py();
    let fut = EventLoop::create_future(event_loop)?;
    let op = Arc::new(SockOp {
        event_loop: event_loop.clone().unbind(),
        sock: sock.clone().unbind(),
        fd,
        write,
        fut: fut.clone_ref(py),
        kind,
    });
    event_loop.get().add_op(py, fd, op, write, sock)?;
    Ok(fut)
}

fn not_implemented(py: Python<'_>) -> Py<PyAny> {
    py.NotImplemented()
}

/// `sock_recv`'s engine: bytes, a future, or `NotImplemented` (see the module docs).
#[pyfunction]
#[pyo3(name = "sock_recv")]
pub(crate) fn recv(
    event_loop: &Bound<'_, EventLoop>,
    sock: &Bound<'_, PyAny>,
    n: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = event_loop.py();
    let Some(fd) = fast_fd(event_loop, sock)? else { return Ok(not_implemented(py)) };
    let n = match n.extract::<isize>().ok().and_then(|n| usize::try_from(n).ok()) {
        Some(n) => n,
        // Negative, or not an integer: the socket's method raises asyncio's error.
        None => return Ok(sock.call_method1(intern!(py, "recv"), (n,))?.unbind()),
    };
    match try_recv(sock, fd, n)? {
        Some(data) => Ok(data),
        None => start(event_loop, sock, fd, false, Kind::Recv(n)),
    }
}

/// `sock_recv_into`'s engine: a byte count, a future, or `NotImplemented`.
#[pyfunction]
#[pyo3(name = "sock_recv_into")]
pub(crate) fn recv_into(
    event_loop: &Bound<'_, EventLoop>,
    sock: &Bound<'_, PyAny>,
    buf: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = event_loop.py();
    let Some(fd) = fast_fd(event_loop, sock)? else { return Ok(not_implemented(py)) };
    match try_recv_into(sock, fd, buf)? {
        Some(n) => Ok(n),
        None => start(event_loop, sock, fd, false, Kind::RecvInto(buf.clone().unbind())),
    }
}

/// `sock_sendall`'s engine: `None` when all is sent, a future, or `NotImplemented`.
#[pyfunction]
#[pyo3(name = "sock_sendall")]
pub(crate) fn sendall(
    event_loop: &Bound<'_, EventLoop>,
    sock: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = event_loop.py();
    let Some(fd) = fast_fd(event_loop, sock)? else { return Ok(not_implemented(py)) };
    let export = match Export::readable(data) {
        Ok(e) => e,
        Err(err) => {
            // Not a contiguous buffer: the socket's own method raises the exact error.
            sock.call_method1(intern!(py, "send"), (data,))?;
            return Err(err);
        }
    };
    if export.len() == 0 {
        // Nothing to send, but the call is made, as asyncio makes it (a closed socket raises).
        retry_eintr(|| net::send(fd, &[])).map_err(|e| os_error(&e))?;
        return Ok(py.None());
    }
    let sent = send_until_blocked(fd, &export, 0).map_err(|e| os_error(&e))?;
    if sent >= export.len() {
        return Ok(py.None());
    }
    let kind = Kind::SendAll { data: data.clone().unbind(), export, sent: GilCell::new(sent) };
    start(event_loop, sock, fd, true, kind)
}

/// `sock_accept`'s engine: `(conn, address)`, a future, or `NotImplemented`.
#[pyfunction]
#[pyo3(name = "sock_accept")]
pub(crate) fn accept(event_loop: &Bound<'_, EventLoop>, sock: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let py = event_loop.py();
    let Some(fd) = fast_fd(event_loop, sock)? else { return Ok(not_implemented(py)) };
    match try_accept(sock)? {
        Some(pair) => Ok(pair),
        None => start(event_loop, sock, fd, false, Kind::Accept),
    }
}

/// `sock_connect`'s engine, after the Python side's checks and name resolution: `None` when
/// connected, a future, or `NotImplemented`.
#[pyfunction]
#[pyo3(name = "sock_connect")]
pub(crate) fn connect(
    event_loop: &Bound<'_, EventLoop>,
    sock: &Bound<'_, PyAny>,
    address: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = event_loop.py();
    if !sock.get_type().is(crate::pyrefs::socket_type(py)?) {
        return Ok(not_implemented(py));
    }
    let fd = fileno(sock)?;
    match sock.call_method1(intern!(py, "connect"), (address,)) {
        Ok(_) => Ok(py.None()),
        // In progress (`InterruptedError` too, as asyncio has it): writable when it ends.
        Err(e) if e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py) => {
            start(event_loop, sock, fd, true, Kind::Connect(address.clone().unbind()))
        }
        Err(e) => Err(e),
    }
}

/// The socket operations' engines, as functions of `ferroloop._ferroloop`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(recv, m)?)?;
    m.add_function(wrap_pyfunction!(recv_into, m)?)?;
    m.add_function(wrap_pyfunction!(sendall, m)?)?;
    m.add_function(wrap_pyfunction!(accept, m)?)?;
    m.add_function(wrap_pyfunction!(accept_inet, m)?)?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    Ok(())
}
