"""The gateway's access rules as pure functions: which paths are the agent's, which headers are credentials."""

from __future__ import annotations

import base64

import pytest

from gateway.access import agent_only_path, carries_our_credential, without_credentials


@pytest.mark.parametrize(
    "path",
    [
        "/_agent/checkpoint",
        "/_agent/unhealthy",
        "/_agent",
        "/_agent/",
        "//_agent/checkpoint",
        "/./_agent/checkpoint",
        "/x/../_agent/checkpoint",
        "/../_agent/checkpoint",
        "/%5Fagent/checkpoint",
        "/%5fAGENT/checkpoint",
        "/%255Fagent/checkpoint",
        "/%2F_agent%2Fcheckpoint",
        "/_agent;v=1/checkpoint",
        "\\_agent\\checkpoint",
        "/_Agent/healthy",
    ],
)
def test_every_spelling_of_an_agent_path_is_the_agents(path):
    assert agent_only_path(path.encode())


@pytest.mark.parametrize("path", ["/", "/health", "/_agents", "/app/_agent/x", "/agent/checkpoint", "/_agent/../x"])
def test_other_paths_are_the_workloads(path):
    assert not agent_only_path(path.encode())


@pytest.mark.parametrize(
    ("value", "ours"),
    [
        ("Bearer ca_abc", True),
        ("bearer wac_1_2", True),
        ("Token wat_1_2", True),
        ("ca_abc", True),
        ('Token token="ca_abc"', True),
        ("Basic " + base64.b64encode(b"user:ca_abc").decode(), True),
        ("Basic " + base64.b64encode(b"wac_1_2:").decode(), True),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", False),
        ("Basic " + base64.b64encode(b"user:password").decode(), False),
        ("Basic !!not-base64", False),
        ("Bearer my-own-ca_token", False),
    ],
)
def test_an_authorization_header_carries_our_credential_or_not(value, ours):
    assert carries_our_credential(value.encode()) is ours


def test_without_credentials_keeps_the_workloads_own_headers():
    headers = [
        (b"x-workload-token", b"wac_1_2"),
        (b"x-workload-token", b"second"),
        (b"authorization", b"Bearer ca_abc"),
        (b"authorization", b"Bearer app-own"),
        (b"x-other", b"kept"),
    ]
    assert without_credentials(headers) == [(b"authorization", b"Bearer app-own"), (b"x-other", b"kept")]
    # The header that admitted the request goes whatever it holds.
    assert without_credentials(headers, admitted_by=b"authorization") == [(b"x-other", b"kept")]
