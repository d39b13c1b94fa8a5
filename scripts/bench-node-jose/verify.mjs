// Verifies the tokens `bashu bench --node` hands over, each in a timed loop,
// with the `jose` package's compactVerify (signature only, keys imported
// once), and prints one JSON object with the rates on stdout.
//
// Usage: node verify.mjs cases.json
// cases.json: {"durationMs": 1000, "cases": [{"name", "alg", "jwk", "token"}]}
import { readFileSync } from 'node:fs';
import { compactVerify, importJWK } from 'jose';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const joseVersion = JSON.parse(
  readFileSync(new URL('./node_modules/jose/package.json', import.meta.url), 'utf8'),
).version;

const results = [];
for (const c of input.cases) {
  const key = await importJWK(c.jwk, c.alg);
  // A wrong key or token must fail loudly, never be timed as fast.
  await compactVerify(c.token, key);
  for (let i = 0; i < 200; i++) await compactVerify(c.token, key);
  const start = process.hrtime.bigint();
  const limit = BigInt(input.durationMs) * 1_000_000n;
  let n = 0;
  let elapsed = 0n;
  do {
    for (let i = 0; i < 16; i++) await compactVerify(c.token, key);
    n += 16;
    elapsed = process.hrtime.bigint() - start;
  } while (elapsed < limit);
  results.push({ name: c.name, alg: c.alg, verifies: n, perSec: n / (Number(elapsed) / 1e9) });
}
console.log(JSON.stringify({ node: process.version, jose: joseVersion, results }));
