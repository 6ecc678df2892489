// The committed artifact (build/PaymentChannel.json, which the Rust side will embed) must be
// exactly what the pinned compiler makes of the committed source.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { artifact, ARTIFACT_PATH } from '../build.mjs';

it('build/PaymentChannel.json matches a fresh compile of PaymentChannel.sol', () => {
  const committed = readFileSync(ARTIFACT_PATH, 'utf8');
  const fresh = artifact();
  assert.ok(fresh === committed, 'build/PaymentChannel.json is stale: run `node build.mjs` in contracts/ and commit it');
  const json = JSON.parse(committed);
  assert.match(json.compiler, /^solc 0\.8\.37\+/);
  // No PUSH0 (0x5f) as an opcode would be the proof that evmVersion stayed at paris; checking
  // the setting is the reliable part.
  assert.equal(json.settings.evmVersion, 'paris');
  for (const f of ['open', 'topUp', 'claim', 'reclaim', 'channels', 'voucherDigest', 'bidDigest', 'domainSeparator']) {
    assert.ok(json.abi.some((e) => e.type === 'function' && e.name === f), `abi lacks ${f}`);
  }
});
