"""Helpers for the integration suite (imported by its conftest and test modules)."""

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

# Bound on one scenario's coroutine; each takes well under a second when all is well.
SCENARIO_TIMEOUT = 20.0
# Bound on a server's start or stop.
SERVICE_TIMEOUT = 30.0

SKIP_SERVICES_ENV = "FERROLOOP_SKIP_SERVICES"


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers we cannot hand a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket():
    """A listening TCP socket on 127.0.0.1 and a free port, to hand to a server: no race for the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def run_scenario(loop_factory, main, timeout=SCENARIO_TIMEOUT):
    """``asyncio.run(main())`` on the loop ``loop_factory`` makes, bounded by ``timeout`` seconds.

    Also checks that ``main`` ran on the loop under test and not on some loop a library made.
    """

    async def bounded():
        loop = asyncio.get_running_loop()
        assert type(loop) is loop_factory.loop_class, type(loop)
        return await asyncio.wait_for(main(), timeout)

    return loop_factory.run(bounded())


def tls_contexts():
    """``(server_context, client_context)`` for 127.0.0.1, from a throwaway CA (trustme)."""
    import ssl

    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return server, client


def loop_class_name(loop_or_class):
    """``module.QualName`` of a loop's class (or of a class)."""
    cls = loop_or_class if isinstance(loop_or_class, type) else type(loop_or_class)
    return f"{cls.__module__}.{cls.__qualname__}"


# ---------------------------------------------------------------------------
# Services: missing binaries fail, unless FERROLOOP_SKIP_SERVICES=1.


def service_missing(what):
    reason = f"{what} is not installed: run `make integration-setup` (installs the Debian packages as root)"
    if os.environ.get(SKIP_SERVICES_ENV) == "1":
        pytest.skip(f"{reason}; skipped because {SKIP_SERVICES_ENV}=1")
    pytest.fail(reason, pytrace=False)


def postgres_bindir():
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return os.path.dirname(initdb)
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory, trust auth, 127.0.0.1 only."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.port = None
        self.user = "postgres"
        self.database = "postgres"
        self.run_as = None
        self.client_ssl = None
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(
                    "running as root, and there is no 'postgres' user to run PostgreSQL as: "
                    "run `make integration-setup` (the postgresql package creates it)",
                    pytrace=False,
                )
            self.run_as = "postgres"
        self.base = tempfile.mkdtemp(prefix="ferroloop-pg-")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgres.log")
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o700)

    @property
    def dsn(self):
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _cmd(self, tool, *args):
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return cmd

    def _check(self, tool, *args):
        proc = subprocess.run(
            self._cmd(tool, *args),
            capture_output=True,
            text=True,
            timeout=SERVICE_TIMEOUT + 10,
            cwd=self.base,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self._log_tail()}")
        return proc

    def _log_tail(self):
        try:
            with open(self.log) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def start(self):
        self._check(
            "initdb", "-D", self.data, "-U", self.user, "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"
        )
        tls_options = self._make_certificates()
        last_error = None
        for _ in range(3):  # another process may take the port between free_port() and the bind
            self.port = free_port()
            options = (
                f"-p {self.port} -c listen_addresses={self.host} -k {self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off " + tls_options
            )
            try:
                self._check("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "30", "start")
            except RuntimeError as exc:
                last_error = exc
                continue
            return self
        raise last_error

    def _make_certificates(self):
        """TLS for the server (asyncpg upgrades with loop.start_tls); ``client_ssl`` trusts it."""
        import ssl

        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert_file = os.path.join(self.base, "server.crt")
        key_file = os.path.join(self.base, "server.key")
        cert.cert_chain_pems[0].write_to_path(cert_file)
        cert.private_key_pem.write_to_path(key_file)
        os.chmod(key_file, 0o600)
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            for path in (cert_file, key_file):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.client_ssl = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(self.client_ssl)
        return f"-c ssl=on -c ssl_cert_file={cert_file} -c ssl_key_file={key_file}"

    def stop(self):
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._check("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, binary):
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = None
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="ferroloop-redis-")
        self.log = os.path.join(self.dir, "redis.log")

    @property
    def url(self):
        return f"redis://{self.host}:{self.port}/0"

    def start(self):
        for _ in range(3):
            self.port = free_port()
            with open(self.log, "ab") as log:
                # redis-server's argv: "--save ''" is an empty save list (no snapshots).
                self.proc = subprocess.Popen(
                    [
                        self.binary,
                        "--port",
                        str(self.port),
                        "--bind",
                        self.host,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--dir",
                        self.dir,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + SERVICE_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _redis_ping(self.port):
                    return self
                time.sleep(0.05)
            self._terminate()
        with open(self.log) as f:
            raise RuntimeError(f"redis-server did not start:\n{f.read()[-4000:]}")

    def _terminate(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(SERVICE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(SERVICE_TIMEOUT)
        self.proc = None

    def stop(self):
        try:
            self._terminate()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
