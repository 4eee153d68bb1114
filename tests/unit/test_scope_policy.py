"""`DATAPULSE_SCOPES` parsing and matching, and the RFC 9728 metadata locations and challenges (pure tables)."""

from __future__ import annotations

import pytest

from datapulse.auth.principal import Principal
from datapulse.auth.resource import ProtectedResource
from datapulse.auth.scopes import Kind, ScopePolicy, ScopeRule, parse_scope_policy

POLICY = "tool:admin_*=admin;tool:fetch_url=net:read web\nresource:file:///secret/*=secret;prompt:*=prompts;tool:*x=x"


@pytest.mark.parametrize(
    ("kind", "name", "required"),
    [
        ("tool", "admin_reset", {"admin"}),
        ("tool", "fetch_url", {"net:read", "web"}),
        ("tool", "admin_x", {"admin"}),  # the first matching rule wins over the later 'tool:*x'
        ("tool", "box", {"x"}),
        ("tool", "echo", set()),
        ("tool", "Admin_reset", set()),  # globs are case-sensitive
        ("resource", "file:///secret/key.pem", {"secret"}),
        ("resource", "file:///public/readme", set()),
        ("prompt", "anything", {"prompts"}),
        ("resource", "admin_reset", set()),  # rules apply to their own kind only
    ],
)
def test_the_first_rule_of_the_items_kind_whose_glob_matches_names_the_scopes_it_needs(
    kind: Kind, name: str, required: set[str]
) -> None:
    assert parse_scope_policy(POLICY).required(kind, name) == frozenset(required)


def test_rules_keep_their_order_and_every_named_scope_is_listed_once() -> None:
    policy = parse_scope_policy(POLICY)
    assert policy.rules[0] == ScopeRule("tool", "admin_*", frozenset({"admin"}))
    assert list(policy.all_scopes()) == ["admin", "net:read", "web", "secret", "prompts", "x"]


@pytest.mark.parametrize("spec", [None, "", " ; ;\n"])
def test_an_empty_policy_requires_nothing(spec: str | None) -> None:
    policy = parse_scope_policy(spec)
    assert not policy
    assert policy == ScopePolicy()
    assert policy.required("tool", "anything") == frozenset()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("admin_*=admin", "must start with 'tool:'"),
        ("widget:x=y", "must start with 'tool:'"),
        ("tool:admin_*", "must look like 'tool:GLOB=SCOPE"),
        ("tool:=admin", "must look like 'tool:GLOB=SCOPE"),
        ("tool:x=  ", "names no scope"),
        ("tool:a=b;prompt:p", "scope rule 2"),
    ],
)
def test_a_malformed_rule_is_refused_with_its_position(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        parse_scope_policy(spec)


@pytest.mark.parametrize(
    ("principal", "required", "missing"),
    [
        (Principal("a", frozenset({"admin"})), {"admin"}, set()),
        (Principal("a", frozenset({"web"})), {"net:read", "web"}, {"net:read"}),
        (Principal("a", unrestricted=True), {"admin"}, set()),
        (Principal("a"), set(), set()),
    ],
)
def test_a_principal_lacks_exactly_the_required_scopes_it_does_not_hold(
    principal: Principal, required: set[str], missing: set[str]
) -> None:
    assert principal.missing(frozenset(required)) == frozenset(missing)


def test_jwt_principals_are_keyed_by_issuer_so_a_subject_never_collides_with_a_static_principal() -> None:
    assert Principal("alice", unrestricted=True).key == "alice"
    assert Principal("alice", issuer="https://issuer.example").key == "https://issuer.example alice"


def resource(public_url: str | None = None, root_path: str = "") -> ProtectedResource:
    return ProtectedResource(public_url, root_path, ("https://as.example",), ("files:read",), ("files:read",), "Demo")


@pytest.mark.parametrize(
    ("public_url", "root_path", "scheme", "host", "base", "metadata"),
    [
        (None, "", "http", "127.0.0.1:8000", "http://127.0.0.1:8000", "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"),
        (None, "/tools", "https", "api.example", "https://api.example/tools", "https://api.example/.well-known/oauth-protected-resource/tools/mcp"),
        ("https://mcp.example/", "", "http", "10.0.0.1", "https://mcp.example", "https://mcp.example/.well-known/oauth-protected-resource/mcp"),
    ],
)  # fmt: skip
def test_the_metadata_url_inserts_the_well_known_segment_between_host_and_resource_path(
    public_url: str | None, root_path: str, scheme: str, host: str, base: str, metadata: str
) -> None:
    described = resource(public_url, root_path)
    assert described.base_url(scheme, host) == base
    assert described.metadata_url(base) == metadata


def test_the_metadata_document_names_the_resource_its_authorization_servers_and_scopes() -> None:
    assert resource().document("https://mcp.example", "/mcp") == {
        "resource": "https://mcp.example/mcp",
        "authorization_servers": ["https://as.example"],
        "scopes_supported": ["files:read"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Demo",
    }


def test_a_prefixed_server_also_answers_at_the_rfc_location_of_its_resources() -> None:
    assert resource(root_path="/tools").served_paths() == {
        "/.well-known/oauth-protected-resource": "",
        "/.well-known/oauth-protected-resource/mcp": "/mcp",
        "/.well-known/oauth-protected-resource/sse": "/sse",
        "/.well-known/oauth-protected-resource/tools": "",
        "/.well-known/oauth-protected-resource/tools/mcp": "/mcp",
        "/.well-known/oauth-protected-resource/tools/sse": "/sse",
    }


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 'Bearer realm="datapulse", scope="files:read", resource_metadata="M"'),
        (
            {"error": "invalid_token", "description": 'token "expired"'},
            'Bearer realm="datapulse", error="invalid_token", error_description="token \\"expired\\"", '
            'scope="files:read", resource_metadata="M"',
        ),
        (
            {"error": "insufficient_scope", "scopes": ["admin", "files:read"]},
            'Bearer realm="datapulse", error="insufficient_scope", scope="admin files:read", resource_metadata="M"',
        ),
    ],
)
def test_challenges_carry_error_scope_and_resource_metadata_as_quoted_strings(
    kwargs: dict[str, object], expected: str
) -> None:
    challenge = resource().challenge("https://mcp.example", **kwargs)  # type: ignore[arg-type]
    assert challenge == expected.replace('"M"', '"https://mcp.example/.well-known/oauth-protected-resource/mcp"')
