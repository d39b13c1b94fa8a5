#!/usr/bin/env node
// A credit bank talking to Bashu gateways, end to end (docs/integration.md).
//
// Sending side (credit bank of the origin member, e.g. cq):
//   1. sign a learning credential with its own issuer key (ES256 or EdDSA JWK);
//   2. POST /v1/exchanges over mTLS (HTTP/2) to its own gateway;
//   3. poll GET /v1/exchanges/{id} until `delivered`.
// Receiving side (credit bank of the destination member, e.g. sc):
//   4. read GET /v1/inbox until the exchange appears;
//   5. verify the chain [original, interchange, home]: every member's key set
//      is fetched from its gateway and checked against the member's pinned
//      federation key; every link's signature against its issuer's key; each
//      translation's evidence against the SHA-256 of the exact previous link;
//   6. POST /v1/inbox/ack up to the item's cursor.
//
// node:http2 for mTLS, the `jose` package for JWS. Prints one JSON summary
// line on success (exit 0); a reason on stderr and exit 1 otherwise.

import { CompactSign, compactVerify, decodeProtectedHeader, importJWK } from "jose";
import { createHash, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { parseArgs } from "node:util";

class Failure extends Error {}

const REQUEST_TIMEOUT_MS = 10_000;

/** One HTTP/2 mTLS session to a gateway. */
class Gateway {
  constructor(url, ca, cert, key) {
    if (!url.startsWith("https://")) throw new Failure(`${url}: only https:// is allowed`);
    this.session = http2.connect(url, {
      ca: readFileSync(ca),
      cert: readFileSync(cert),
      key: readFileSync(key),
      minVersion: "TLSv1.2",
    });
    this.session.on("error", () => {}); // surfaced per request
  }

  request(method, path, body, accept = "application/json") {
    return new Promise((resolve, reject) => {
      const headers = {
        ":method": method,
        ":path": path,
        accept: `${accept}, application/problem+json`,
      };
      if (body !== undefined) headers["content-type"] = "application/json";
      const req = this.session.request(headers);
      req.setTimeout(REQUEST_TIMEOUT_MS, () => {
        req.close();
        reject(new Failure(`${method} ${path}: timed out`));
      });
      let status = 0;
      const chunks = [];
      req.on("response", (h) => {
        status = h[":status"];
      });
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => resolve({ status, body: Buffer.concat(chunks) }));
      req.on("error", reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  async json(method, path, body, ok = [200]) {
    const r = await this.request(method, path, body);
    const doc = r.body.length ? JSON.parse(r.body.toString("utf8")) : null;
    if (!ok.includes(r.status)) throw new Failure(`${method} ${path}: HTTP ${r.status} ${JSON.stringify(doc)}`);
    return { status: r.status, doc };
  }

  close() {
    this.session.close();
  }
}

function algOf(jwk) {
  if (jwk.kty === "EC" && jwk.crv === "P-256") return "ES256";
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") return "EdDSA";
  throw new Failure(`unsupported key type ${jwk.kty}/${jwk.crv}`);
}

/** A learning credential (SPEC §3) valid for a year, signed as vc+jwt. */
async function issue(subject, issuer, jwk) {
  const now = new Date();
  now.setMilliseconds(0);
  const fmt = (d) => d.toISOString().replace(".000Z", "Z");
  const payload = {
    "@context": ["https://www.w3.org/ns/credentials/v2"],
    type: ["VerifiableCredential", "LearningCredential"],
    id: `urn:uuid:${randomUUID()}`,
    issuer,
    validFrom: fmt(now),
    validUntil: fmt(new Date(now.getTime() + 365 * 24 * 3600 * 1000)),
    credentialSubject: subject,
  };
  const alg = algOf(jwk);
  const key = await importJWK(jwk, alg);
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg, typ: "vc+jwt", cty: "vc", kid: jwk.kid })
    .sign(key);
}

/** Verifies `jws` with the public `jwk`; returns [header, payload]. */
async function verify(jws, jwk, typ) {
  const alg = algOf(jwk);
  const { alg: _a, kid: _k, use: _u, status: _s, role: _r, nbf: _n, retire_after: _ra, revoked_at: _rv, ...bare } = jwk;
  const key = await importJWK({ ...bare, alg }, alg);
  const { payload, protectedHeader } = await compactVerify(jws, key, { algorithms: [alg] });
  if (protectedHeader.typ !== typ) throw new Failure(`unexpected typ ${protectedHeader.typ}`);
  for (const h of ["jku", "x5u", "jwk", "b64"]) {
    if (h in protectedHeader) throw new Failure(`JWS header must not carry ${h}`);
  }
  return [protectedHeader, JSON.parse(new TextDecoder().decode(payload))];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitDelivered(gw, id, deadline) {
  for (;;) {
    const { doc } = await gw.json("GET", `/v1/exchanges/${id}`);
    if (doc.status === "delivered") return doc;
    if (doc.status === "rejected" || doc.status === "dead-lettered") {
      throw new Failure(`exchange ${id} is ${doc.status}: ${JSON.stringify(doc.problem)}`);
    }
    if (Date.now() > deadline) throw new Failure(`exchange ${id} still ${doc.status} at the deadline`);
    await sleep(50);
  }
}

/** Pages through the inbox (oldest first) until `id` shows up. */
async function findInInbox(gw, id, deadline) {
  for (;;) {
    let after = null;
    for (;;) {
      const q = `?limit=100${after === null ? "" : `&after=${after}`}`;
      const { doc: page } = await gw.json("GET", `/v1/inbox${q}`);
      const item = page.items.find((i) => i.exchangeId === id);
      if (item) return item;
      if (page.next === null) break;
      after = page.next;
    }
    if (Date.now() > deadline) throw new Failure(`exchange ${id} never reached the inbox`);
    await sleep(50);
  }
}

/** member → {kid → key}: key sets fetched from each gateway, checked
 *  against the member's pinned federation key. */
async function keySets(members, feds, urls, ca, cert, key) {
  const out = {};
  for (const m of members) {
    const gw = new Gateway(urls[m], ca, cert, key);
    try {
      const r = await gw.request("GET", "/v1/federation/keys", undefined, "application/jwt");
      if (r.status !== 200) throw new Failure(`key set of ${m}: HTTP ${r.status}`);
      const fed = JSON.parse(readFileSync(feds[m], "utf8"));
      const [, set] = await verify(r.body.toString("ascii").trim(), fed, "bashu-keyset+jwt");
      if (set.iss !== m) throw new Failure(`key set of ${m} is issued by ${set.iss}`);
      if (set.exp * 1000 <= Date.now()) throw new Failure(`key set of ${m} has expired`);
      out[m] = Object.fromEntries(set.keys.map((k) => [k.kid, k]));
    } finally {
      gw.close();
    }
  }
  return out;
}

/** Verifies [original, interchange, home] link by link (SPEC §3). */
async function verifyChain(chain, sets, origin, destination) {
  if (chain.length !== 3) throw new Failure(`chain has ${chain.length} links, not 3`);
  const issuers = [
    `urn:bashu:${origin}:credit-bank`,
    `urn:bashu:${origin}:gateway`,
    `urn:bashu:${destination}:gateway`,
  ];
  let previous = null;
  for (const [i, jws] of chain.entries()) {
    const header = decodeProtectedHeader(jws);
    const claimed = JSON.parse(Buffer.from(jws.split(".")[1], "base64url").toString("utf8"));
    if (claimed.issuer !== issuers[i]) throw new Failure(`link ${i} issuer ${claimed.issuer} is not ${issuers[i]}`);
    const [, , member, role] = claimed.issuer.split(":");
    const key = sets[member]?.[header.kid];
    if (!key) throw new Failure(`link ${i}: kid ${header.kid} is not in ${member}'s key set`);
    if (key.role !== (role === "credit-bank" ? "issuer" : "gateway")) {
      throw new Failure(`link ${i}: key ${key.kid} has role ${key.role}`);
    }
    if (!["active", "retiring"].includes(key.status)) throw new Failure(`link ${i}: key ${key.kid} is ${key.status}`);
    const [, payload] = await verify(jws, key, "vc+jwt");
    if (previous) {
      const ev = (payload.evidence ?? []).filter((e) => (e.type ?? []).includes("TranslationEvidence"));
      if (ev.length !== 1) throw new Failure(`link ${i} has no single TranslationEvidence`);
      const digest = createHash("sha256").update(previous.jws, "ascii").digest("hex");
      if (ev[0].predecessorSha256 !== digest) throw new Failure(`link ${i}: evidence digest does not match link ${i - 1}`);
      if (ev[0].predecessorId !== previous.payload.id) throw new Failure(`link ${i}: evidence names ${ev[0].predecessorId}`);
    }
    previous = { jws, payload };
  }
  return previous.payload;
}

function pairs(values, what) {
  const out = {};
  for (const v of values) {
    const at = v.indexOf("=");
    if (at < 0) throw new Failure(`--${what} takes member=value, not ${v}`);
    out[v.slice(0, at)] = v.slice(at + 1);
  }
  return out;
}

async function main() {
  const { values: a } = parseArgs({
    options: {
      ca: { type: "string" },
      gateway: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      "issuer-key": { type: "string" },
      issuer: { type: "string" },
      subject: { type: "string" },
      destination: { type: "string" },
      "dest-gateway": { type: "string" },
      "dest-cert": { type: "string" },
      "dest-key": { type: "string" },
      "federation-key": { type: "string", multiple: true, default: [] },
      "member-url": { type: "string", multiple: true, default: [] },
      timeout: { type: "string", default: "30" },
    },
  });
  for (const req of ["ca", "gateway", "cert", "key", "issuer-key", "issuer", "subject", "destination", "dest-gateway", "dest-cert", "dest-key"]) {
    if (!a[req]) throw new Failure(`--${req} is required`);
  }
  const deadline = Date.now() + Number(a.timeout) * 1000;
  const origin = a.issuer.split(":")[2];
  const jwk = JSON.parse(readFileSync(a["issuer-key"], "utf8"));
  const subject = JSON.parse(readFileSync(a.subject, "utf8"));
  const own = new Gateway(a.gateway, a.ca, a.cert, a.key);
  const dest = new Gateway(a["dest-gateway"], a.ca, a["dest-cert"], a["dest-key"]);
  try {
    const credential = await issue(subject, a.issuer, jwk);
    const { status, doc: answer } = await own.json(
      "POST",
      "/v1/exchanges",
      { credential, destination: a.destination },
      [200, 202],
    );
    const doc = await waitDelivered(own, answer.exchangeId, deadline);
    const item = await findInInbox(dest, answer.exchangeId, deadline);
    if (item.chain[0] !== credential) throw new Failure("the chain does not start with the credential we sent");
    if (item.credential !== item.chain[2]) throw new Failure("credential is not the chain's home link");
    const feds = pairs(a["federation-key"], "federation-key");
    const urls = pairs(a["member-url"], "member-url");
    const members = [...new Set([origin, a.destination])].sort();
    const missing = members.filter((m) => !(m in feds && m in urls));
    if (missing.length) throw new Failure(`need --federation-key and --member-url for ${missing}`);
    const sets = await keySets(members, feds, urls, a.ca, a["dest-cert"], a["dest-key"]);
    const home = await verifyChain(item.chain, sets, origin, a.destination);
    const { doc: acked } = await dest.json("POST", "/v1/inbox/ack", { upTo: item.cursor });
    if (acked.upTo < item.cursor) throw new Failure(`ack answered ${acked.upTo}, below ${item.cursor}`);
    console.log(
      JSON.stringify({
        exchangeId: answer.exchangeId,
        submitStatus: status,
        status: doc.status,
        cursor: item.cursor,
        chainVerified: true,
        homeFramework: home.credentialSubject.framework,
        ackedUpTo: acked.upTo,
      }),
    );
  } finally {
    own.close();
    dest.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`client.mjs: ${e.name}: ${e.message}`);
    process.exit(1);
  },
);
