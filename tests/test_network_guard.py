"""The suite's own guard: nothing in a test reaches beyond loopback."""

import socket

import pytest

from tests.conftest import OutsideNetworkAccess


def test_a_connection_beyond_loopback_is_refused_before_it_leaves_the_machine():
    with pytest.raises(OutsideNetworkAccess, match=r"203\.0\.113\.5"):
        socket.create_connection(("203.0.113.5", 80), timeout=1)


def test_loopback_stays_open():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()
