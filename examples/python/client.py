#!/usr/bin/env python3
"""A credit bank talking to Bashu gateways, end to end (docs/integration.md).

Sending side (credit bank of the origin member, e.g. cq):
  1. sign a learning credential with its own issuer key (ES256 or EdDSA JWK);
  2. POST /v1/exchanges over mTLS to its own gateway;
  3. poll GET /v1/exchanges/{id} until `delivered` (or fail on rejected /
     dead-lettered / timeout).
Receiving side (credit bank of the destination member, e.g. sc):
  4. read GET /v1/inbox until the exchange appears;
  5. verify the chain [original, interchange, home]: every member's key set is
     fetched from its gateway and checked against the member's pinned
     federation key; every link's signature against its issuer's key; each
     translation's evidence against the SHA-256 of the exact previous link;
  6. POST /v1/inbox/ack up to the item's cursor.

Standard library for HTTP and TLS (http.client + ssl.SSLContext); the
`cryptography` package for ES256/EdDSA. Prints one JSON summary line on
success (exit 0); a reason on stderr and exit 1 otherwise.
"""

import argparse
import base64
import hashlib
import http.client
import json
import ssl
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)


class Failure(Exception):
    """Anything that makes the example fail, with a readable reason."""


# --- base64url and JWS -------------------------------------------------------


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u_int(text):
    return int.from_bytes(b64u_decode(text), "big")


def private_key(jwk):
    """A signing key from a private JWK (EC P-256 or OKP Ed25519)."""
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256", ec.derive_private_key(b64u_int(jwk["d"]), ec.SECP256R1())
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return "EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(b64u_decode(jwk["d"]))
    raise Failure("issuer key must be an EC P-256 or OKP Ed25519 private JWK")


def public_key(jwk):
    """A verifying key and its JWS alg from a public JWK."""
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        numbers = ec.EllipticCurvePublicNumbers(b64u_int(jwk["x"]), b64u_int(jwk["y"]), ec.SECP256R1())
        return "ES256", numbers.public_key()
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return "EdDSA", ed25519.Ed25519PublicKey.from_public_bytes(b64u_decode(jwk["x"]))
    raise Failure(f"unsupported key type {jwk.get('kty')}/{jwk.get('crv')}")


def sign_jws(payload, jwk, typ):
    """Compact JWS over the JSON `payload`; the header carries the key's kid."""
    alg, key = private_key(jwk)
    header = {"alg": alg, "typ": typ, "kid": jwk["kid"]}
    if typ == "vc+jwt":
        header["cty"] = "vc"
    signing_input = (
        b64u_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64u_encode(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
    )
    if alg == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(signing_input.encode())
    return signing_input + "." + b64u_encode(signature)


def parse_jws(jws):
    parts = jws.split(".")
    if len(parts) != 3:
        raise Failure("not a compact JWS")
    return json.loads(b64u_decode(parts[0])), json.loads(b64u_decode(parts[1])), parts


def verify_jws(jws, jwk, typ):
    """Checks the signature of `jws` with the public `jwk`; returns the payload."""
    header, payload, parts = parse_jws(jws)
    alg, key = public_key(jwk)
    if header.get("alg") != alg or header.get("typ") != typ:
        raise Failure(f"unexpected JWS header {header}")
    for forbidden in ("crit", "jku", "x5u", "jwk", "b64"):
        if forbidden in header:
            raise Failure(f"JWS header must not carry {forbidden}")
    signing_input = (parts[0] + "." + parts[1]).encode()
    signature = b64u_decode(parts[2])
    try:
        if alg == "ES256":
            if len(signature) != 64:
                raise Failure("ES256 signature must be 64 bytes")
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, signing_input)
    except InvalidSignature as e:
        raise Failure(f"signature of kid {header.get('kid')} does not verify") from e
    return payload


# --- HTTP over mTLS ------------------------------------------------------------


class Gateway:
    """One mTLS connection target: a gateway URL and the client identity."""

    def __init__(self, url, ca, cert, key):
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise Failure(f"{url}: only https:// is allowed")
        self.host, self.port = parts.hostname, parts.port or 443
        self.ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert, key)

    def request(self, method, path, body=None, accept="application/json"):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)
        headers = {"Accept": accept + ", application/problem+json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, resp.getheader("Content-Type", ""), raw
        finally:
            conn.close()

    def json(self, method, path, body=None, ok=(200,)):
        status, ctype, raw = self.request(method, path, body)
        doc = json.loads(raw) if raw else None
        if status not in ok:
            raise Failure(f"{method} {path}: HTTP {status} {doc}")
        return status, doc


# --- the two credit banks --------------------------------------------------------


def issue(subject, issuer, jwk):
    """A learning credential (SPEC §3) valid for a year, signed as vc+jwt."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    payload = {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "type": ["VerifiableCredential", "LearningCredential"],
        "id": f"urn:uuid:{uuid.uuid4()}",
        "issuer": issuer,
        "validFrom": now.strftime(fmt),
        "validUntil": (now + timedelta(days=365)).strftime(fmt),
        "credentialSubject": subject,
    }
    return sign_jws(payload, jwk, "vc+jwt")


def wait_delivered(gw, exchange_id, deadline):
    while True:
        _, doc = gw.json("GET", f"/v1/exchanges/{exchange_id}")
        if doc["status"] == "delivered":
            return doc
        if doc["status"] in ("rejected", "dead-lettered"):
            raise Failure(f"exchange {exchange_id} is {doc['status']}: {doc.get('problem')}")
        if time.monotonic() > deadline:
            raise Failure(f"exchange {exchange_id} still {doc['status']} at the deadline")
        time.sleep(0.05)


def find_in_inbox(gw, exchange_id, deadline):
    """Pages through the inbox (oldest first) until `exchange_id` shows up."""
    while True:
        after = None
        while True:
            query = "?limit=100" + (f"&after={after}" if after is not None else "")
            _, page = gw.json("GET", "/v1/inbox" + query)
            for item in page["items"]:
                if item["exchangeId"] == exchange_id:
                    return item
            if page["next"] is None:
                break
            after = page["next"]
        if time.monotonic() > deadline:
            raise Failure(f"exchange {exchange_id} never reached the inbox")
        time.sleep(0.05)


def key_sets(gw, members, federation_keys, member_urls, args):
    """Every member's key set, fetched from its gateway, checked against the
    member's pinned federation key; returns member → {kid → key}."""
    out = {}
    for member in members:
        target = Gateway(member_urls[member], args.ca, args.dest_cert, args.dest_key)
        status, _, raw = target.request("GET", "/v1/federation/keys", accept="application/jwt")
        if status != 200:
            raise Failure(f"key set of {member}: HTTP {status}")
        with open(federation_keys[member], encoding="utf-8") as f:
            fed = json.load(f)
        payload = verify_jws(raw.decode("ascii").strip(), fed, "bashu-keyset+jwt")
        if payload.get("iss") != member:
            raise Failure(f"key set of {member} is issued by {payload.get('iss')}")
        if payload.get("exp", 0) <= time.time():
            raise Failure(f"key set of {member} has expired")
        out[member] = {k["kid"]: k for k in payload["keys"]}
    return out


def verify_chain(chain, sets, origin, destination):
    """Verifies [original, interchange, home] link by link (SPEC §3)."""
    if len(chain) != 3:
        raise Failure(f"chain has {len(chain)} links, not 3")
    expected_issuers = [
        f"urn:bashu:{origin}:credit-bank",
        f"urn:bashu:{origin}:gateway",
        f"urn:bashu:{destination}:gateway",
    ]
    previous = None
    for i, jws in enumerate(chain):
        header, claimed, _ = parse_jws(jws)
        issuer = claimed.get("issuer")
        if issuer != expected_issuers[i]:
            raise Failure(f"link {i} issuer {issuer} is not {expected_issuers[i]}")
        _, _, member, role = issuer.split(":")
        key = sets.get(member, {}).get(header.get("kid"))
        if key is None:
            raise Failure(f"link {i}: kid {header.get('kid')} is not in {member}'s key set")
        if key.get("role") != ("issuer" if role == "credit-bank" else "gateway"):
            raise Failure(f"link {i}: key {key['kid']} has role {key.get('role')}")
        if key.get("status") not in ("active", "retiring"):
            raise Failure(f"link {i}: key {key['kid']} is {key.get('status')}")
        payload = verify_jws(jws, key, "vc+jwt")
        if previous is not None:
            evidence = [e for e in payload.get("evidence", []) if "TranslationEvidence" in e.get("type", [])]
            if len(evidence) != 1:
                raise Failure(f"link {i} has no single TranslationEvidence")
            prev_jws, prev_payload = previous
            digest = hashlib.sha256(prev_jws.encode("ascii")).hexdigest()
            if evidence[0].get("predecessorSha256") != digest:
                raise Failure(f"link {i}: evidence digest does not match link {i - 1}")
            if evidence[0].get("predecessorId") != prev_payload["id"]:
                raise Failure(f"link {i}: evidence names {evidence[0].get('predecessorId')}")
        previous = (jws, payload)
    return previous[1]


def pairs(values, what):
    out = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep:
            raise Failure(f"--{what} takes member=value, not {v!r}")
        out[name] = rest
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ca", required=True, help="federation CA (PEM)")
    p.add_argument("--gateway", required=True, help="own gateway, https://host:port")
    p.add_argument("--cert", required=True, help="own credit-bank client certificate")
    p.add_argument("--key", required=True, help="its private key")
    p.add_argument("--issuer-key", required=True, help="private issuer JWK (bashu keys issuer-keypair)")
    p.add_argument("--issuer", required=True, help="issuer id, urn:bashu:<member>:credit-bank")
    p.add_argument("--subject", required=True, help="learning record (credentialSubject) JSON file")
    p.add_argument("--destination", required=True, help="receiving member id")
    p.add_argument("--dest-gateway", required=True, help="destination member's gateway")
    p.add_argument("--dest-cert", required=True, help="destination credit-bank certificate")
    p.add_argument("--dest-key", required=True, help="its private key")
    p.add_argument("--federation-key", action="append", default=[], help="member=pinned federation public JWK")
    p.add_argument("--member-url", action="append", default=[], help="member=gateway URL serving its key set")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    try:
        deadline = time.monotonic() + args.timeout
        origin = args.issuer.split(":")[2]
        with open(args.issuer_key, encoding="utf-8") as f:
            jwk = json.load(f)
        with open(args.subject, encoding="utf-8") as f:
            subject = json.load(f)
        own = Gateway(args.gateway, args.ca, args.cert, args.key)
        credential = issue(subject, args.issuer, jwk)
        status, answer = own.json(
            "POST", "/v1/exchanges", {"credential": credential, "destination": args.destination}, ok=(200, 202)
        )
        exchange_id = answer["exchangeId"]
        doc = wait_delivered(own, exchange_id, deadline)

        dest = Gateway(args.dest_gateway, args.ca, args.dest_cert, args.dest_key)
        item = find_in_inbox(dest, exchange_id, deadline)
        if item["chain"][0] != credential:
            raise Failure("the chain does not start with the credential we sent")
        if item["credential"] != item["chain"][-1]:
            raise Failure("credential is not the chain's home link")
        feds, urls = pairs(args.federation_key, "federation-key"), pairs(args.member_url, "member-url")
        members = sorted({origin, args.destination})
        missing = [m for m in members if m not in feds or m not in urls]
        if missing:
            raise Failure(f"need --federation-key and --member-url for {missing}")
        sets = key_sets(dest, members, feds, urls, args)
        home = verify_chain(item["chain"], sets, origin, args.destination)
        _, acked = dest.json("POST", "/v1/inbox/ack", {"upTo": item["cursor"]})
        if acked["upTo"] < item["cursor"]:
            raise Failure(f"ack answered {acked['upTo']}, below {item['cursor']}")
        print(
            json.dumps(
                {
                    "exchangeId": exchange_id,
                    "submitStatus": status,
                    "status": doc["status"],
                    "cursor": item["cursor"],
                    "chainVerified": True,
                    "homeFramework": home["credentialSubject"].get("framework"),
                    "ackedUpTo": acked["upTo"],
                }
            )
        )
        return 0
    except (Failure, OSError, ValueError, KeyError) as e:
        print(f"client.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
