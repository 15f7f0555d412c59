"""wdl_tf.ports: distinct, bindable loopback ports; a bad count is named."""

import socket

import pytest

from wdl_tf import ports


def test_free_ports_are_distinct_and_bindable():
    got = ports.free_ports(5)
    assert len(set(got)) == 5
    for port in got:
        with socket.socket() as s:
            s.bind((ports.LOOPBACK, port))  # raises if the port were taken
    assert 0 < ports.free_port() < 65536


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_bad_count(n):
    with pytest.raises(ValueError, match=f"n: must be an integer >= 1, got {n!r}"):
        ports.free_ports(n)
