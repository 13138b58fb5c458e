"""Fixtures of the gateway's end-to-end tests: what they start is stopped when the test ends."""

import pytest

from tests.gateway.helpers import Agent, EchoUpstream, Gateway, stopped_after


@pytest.fixture
def gateway_factory():
    start, gateways = stopped_after(lambda **env: Gateway(env))
    yield start
    for gateway in gateways:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def agent_factory():
    start, agents = stopped_after(Agent)
    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def echo_upstream():
    upstream = EchoUpstream()
    yield upstream
    upstream.close()
