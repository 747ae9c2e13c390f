"""loop.getaddrinfo / loop.getnameinfo."""

import asyncio
import socket

import pytest


@pytest.mark.parametrize(
    "host, port, kwargs",
    [
        ("localhost", 80, {}),
        ("localhost", 0, {"type": socket.SOCK_STREAM}),
        ("localhost", "80", {"family": socket.AF_INET}),
        ("127.0.0.1", 8080, {}),
        ("127.0.0.1", 8080, {"family": socket.AF_INET, "type": socket.SOCK_DGRAM}),
        ("127.0.0.1", None, {"flags": socket.AI_NUMERICHOST}),
        (None, 80, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
        ("127.0.0.1", 80, {"proto": socket.IPPROTO_TCP}),
    ],
)
def test_getaddrinfo_matches_socket(loop, run, host, port, kwargs):
    expected = socket.getaddrinfo(host, port, **kwargs)
    result = run(loop.getaddrinfo(host, port, **kwargs))
    assert isinstance(result, list)
    assert result == expected
    for family, type_, proto, canonname, sockaddr in result:
        assert isinstance(family, socket.AddressFamily)
        assert isinstance(type_, socket.SocketKind)
        assert isinstance(proto, int)
        assert isinstance(canonname, str)
        assert isinstance(sockaddr, tuple)


def test_getaddrinfo_ipv6_literal(loop, run):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        expected = socket.getaddrinfo("::1", 80, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        pytest.skip(f"IPv6 loopback not resolvable here: {exc}")
    assert run(loop.getaddrinfo("::1", 80, type=socket.SOCK_STREAM)) == expected


def test_getaddrinfo_canonname(loop, run):
    kwargs = {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "flags": socket.AI_CANONNAME}
    expected = socket.getaddrinfo("localhost", 80, **kwargs)
    assert run(loop.getaddrinfo("localhost", 80, **kwargs)) == expected


def test_getaddrinfo_concurrent(loop, run):
    async def main():
        return await asyncio.gather(
            *(loop.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM) for port in range(1000, 1010))
        )

    results = run(main())
    assert [r[0][4] for r in results] == [("127.0.0.1", port) for port in range(1000, 1010)]


def test_getaddrinfo_bad_host_numeric(loop, run):
    with pytest.raises(socket.gaierror) as info:
        run(loop.getaddrinfo("not-a-number", 80, flags=socket.AI_NUMERICHOST))
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo("not-a-number", 80, flags=socket.AI_NUMERICHOST)
    assert info.value.errno == expected.value.errno


def test_getaddrinfo_bad_host(loop, run):
    # .invalid is reserved (RFC 6761) and never resolves
    with pytest.raises(socket.gaierror):
        run(loop.getaddrinfo("nonexistent.invalid", 80))


def test_getaddrinfo_bad_service(loop, run):
    with pytest.raises(socket.gaierror):
        run(loop.getaddrinfo("127.0.0.1", "no-such-service-name"))


def test_getaddrinfo_bad_port_type(loop, run):
    # socket.getaddrinfo raises OSError("Int or String expected")
    with pytest.raises(OSError):
        run(loop.getaddrinfo("127.0.0.1", 1.5))


@pytest.mark.parametrize(
    "sockaddr, flags",
    [
        (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
        (("127.0.0.1", 80), 0),
        (("127.0.0.1", 8080), socket.NI_NUMERICSERV),
        (("127.0.0.1", 53), socket.NI_DGRAM | socket.NI_NUMERICHOST),
    ],
)
def test_getnameinfo_matches_socket(loop, run, sockaddr, flags):
    expected = socket.getnameinfo(sockaddr, flags)
    assert run(loop.getnameinfo(sockaddr, flags)) == expected


def test_getnameinfo_numeric(loop, run):
    result = run(loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert result == ("127.0.0.1", "80")


def test_getnameinfo_default_flags(loop, run):
    assert run(loop.getnameinfo(("127.0.0.1", 80))) == socket.getnameinfo(("127.0.0.1", 80), 0)


def test_getnameinfo_bad_sockaddr(loop, run):
    with pytest.raises(TypeError):
        run(loop.getnameinfo(("127.0.0.1",), 0))


def test_getnameinfo_unresolvable_host(loop, run):
    with pytest.raises(socket.gaierror):
        run(loop.getnameinfo(("nonexistent.invalid", 80), 0))


def test_getaddrinfo_debug_mode(loop, run):
    loop.set_debug(True)
    expected = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    assert run(loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)) == expected
