// The committed artifacts (build/PaymentChannel.json, which the Rust side will embed, and the
// tests' contracts) must be exactly what the pinned compiler makes of the committed sources.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { artifacts, BUILD_DIR } from '../build.mjs';

it('build/*.json match a fresh compile of the sources', () => {
  const fresh = artifacts();
  for (const [name, text] of Object.entries(fresh)) {
    const committed = readFileSync(join(BUILD_DIR, name), 'utf8');
    assert.ok(text === committed, `build/${name} is stale: run \`node build.mjs\` in contracts/ and commit it`);
  }
  const json = JSON.parse(fresh['PaymentChannel.json']);
  assert.match(json.compiler, /^solc 0\.8\.37\+/);
  assert.equal(json.settings.evmVersion, 'paris');
  for (const f of ['open', 'topUp', 'claim', 'reclaim', 'channels', 'voucherDigest', 'bidDigest', 'domainSeparator']) {
    assert.ok(json.abi.some((e) => e.type === 'function' && e.name === f), `abi lacks ${f}`);
  }
});
