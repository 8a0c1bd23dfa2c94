"""Token keys: FLEET_TOKEN_KEYS parsing, Ed25519 keys beside HS256 secrets, and rotation across nodes."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fleet_serve.auth import decode_token, issue_token
from fleet_serve.errors import Unauthorized
from fleet_serve.settings import ServeSettings, TokenKey, parse_token_keys
from fleet_store.errors import ConfigError

SEED = bytes(range(32))
PUBLIC = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_keys_of_every_kind_parse_in_order() -> None:
    keys = parse_token_keys(f"a=ed25519:{_b64(SEED)}, b={_b64(b'h' * 32)},c=ed25519-public:{_b64(PUBLIC)}")
    assert [(k.kid, k.kind) for k in keys] == [("a", "ed25519"), ("b", "hs256"), ("c", "ed25519-public")]
    assert keys[0].secret == SEED
    assert _b64(SEED) not in repr(keys)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (f"a=rsa:{_b64(SEED)}", "kind 'rsa'"),
        (f"a=ed25519:{_b64(SEED + b'x')}", "33 bytes, not 32"),
        (f"a={_b64(b'short')}", "5 bytes, needs 32"),
        ("a=ed25519:not base64!", "not base64"),
        (f"a={_b64(SEED)},a={_b64(SEED)}", "given twice"),
        (_b64(SEED), "each key is kid="),
    ],
)
def test_a_malformed_key_is_a_config_error_naming_the_key_not_the_secret(raw: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as refused:
        parse_token_keys(raw)
    assert _b64(SEED) not in refused.value.message


def test_an_ed25519_token_verifies_on_a_node_holding_only_the_public_key() -> None:
    issuer = ServeSettings(token_keys=(TokenKey("e1", SEED, "ed25519"),))
    verifier = ServeSettings(token_keys=(TokenKey("e1", PUBLIC, "ed25519-public"),))
    token, issued = issue_token(issuer, role="analyst", operators=("sogral",), ttl_s=60, sub="a")
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert decode_token(verifier, token) == issued
    with pytest.raises(ConfigError, match="verifies only"):
        issue_token(verifier, role="analyst", operators=("sogral",), ttl_s=60, sub="a")


def test_an_hs256_token_keyed_with_the_public_key_is_refused() -> None:
    """The classic algorithm confusion: the public key used as an HMAC secret."""
    verifier = ServeSettings(token_keys=(TokenKey("e1", PUBLIC, "ed25519-public"),))
    now = int(time.time())
    body = {"iss": "fleet", "sub": "x", "role": "manager", "operators": ["sogral"]}
    forged = jwt.encode(
        {**body, "iat": now, "exp": now + 60, "jti": "j"},
        PUBLIC * 2,
        algorithm="HS256",
        headers={"kid": "e1"},
    )
    with pytest.raises(Unauthorized) as refused:
        decode_token(verifier, forged)
    assert refused.value.code == "token_malformed"


def test_rotation_a_new_first_key_signs_and_the_old_one_still_verifies() -> None:
    old = TokenKey("k2026", b"o" * 32)
    new = TokenKey("k2027", SEED, "ed25519")
    before = ServeSettings(token_keys=(old,))
    during = ServeSettings(token_keys=(new, old))
    after = ServeSettings(token_keys=(new,))
    old_token, _ = issue_token(before, role="booking", operators=("sogral",), ttl_s=60, sub="b")
    new_token, _ = issue_token(during, role="booking", operators=("sogral",), ttl_s=60, sub="b")
    assert decode_token(during, old_token).kid == "k2026"
    assert decode_token(after, new_token).kid == "k2027"
    assert decode_token(before, old_token).kid == "k2026"
    with pytest.raises(Unauthorized) as refused:
        decode_token(after, old_token)
    assert refused.value.code == "token_unknown_key"
