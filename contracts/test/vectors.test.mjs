// The test vectors of docs/speed.md §3 (v2, EIP-712): computed here with ethers (an independent
// EIP-712 implementation, the one wallets' libraries use), checked against the contract's own
// digests on a fresh chain, paid out by a real claim, and required to appear in the document.
//
// The contract of the vectors is the first contract the payer's account deploys (CREATE address
// of payer at nonce 0), so a fresh anvil reproduces it exactly.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ethers } from 'ethers';
import { BTT, CHAIN_ID, VOUCHER_TYPES, BID_TYPES, domain, startChain, fundedWallet, deployChannels } from './chain.mjs';

const doc = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'speed.md'), 'utf8');
const hex = (b) => ethers.hexlify(b).slice(2);

const CHANNEL = '0x' + '11'.repeat(32);
const AMOUNT = BTT; // 1 BTT
const PRICE = 10n ** 15n; // 0.001 BTT per MiB
const CAP = 10n * BTT;

let chain, payer, seeder;
before(async () => {
  chain = await startChain();
  payer = await fundedWallet(chain.provider, 0x01);
  seeder = await fundedWallet(chain.provider, 0x02);
});
after(() => chain?.stop());

it('the documented EIP-712 vectors are what ethers computes, the contract checks and pays', async () => {
  const contract = ethers.getCreateAddress({ from: payer.address, nonce: 0 });
  const dom = domain(CHAIN_ID, contract);
  const voucher = { channel: CHANNEL, payee: seeder.address, amount: AMOUNT };
  const bid = { channel: CHANNEL, payee: seeder.address, price: PRICE, cap: CAP };
  const enc = (types) => ethers.TypedDataEncoder.from(types);
  const voucherSig = await payer.signTypedData(dom, VOUCHER_TYPES, voucher);
  const bidSig = await payer.signTypedData(dom, BID_TYPES, bid);
  const iface = new ethers.Interface(['function claim(bytes32 channel, uint256 amount, bytes signature)']);
  const v = {
    payer: payer.address,
    payee: seeder.address,
    contract,
    'domain type': 'EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)',
    'voucher type': enc(VOUCHER_TYPES).encodeType('Voucher'),
    'bid type': enc(BID_TYPES).encodeType('Bid'),
    'domain typehash': hex(ethers.id('EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)')),
    'voucher typehash': hex(ethers.id(enc(VOUCHER_TYPES).encodeType('Voucher'))),
    'bid typehash': hex(ethers.id(enc(BID_TYPES).encodeType('Bid'))),
    'domain separator': hex(ethers.TypedDataEncoder.hashDomain(dom)),
    'voucher struct': hex(enc(VOUCHER_TYPES).hash(voucher)),
    'voucher digest': hex(ethers.TypedDataEncoder.hash(dom, VOUCHER_TYPES, voucher)),
    'voucher signature': hex(voucherSig),
    'bid struct': hex(enc(BID_TYPES).hash(bid)),
    'bid digest': hex(ethers.TypedDataEncoder.hash(dom, BID_TYPES, bid)),
    'bid signature': hex(bidSig),
    'claim calldata': hex(iface.encodeFunctionData('claim', [CHANNEL, AMOUNT, voucherSig])),
  };
  const printed = Object.entries(v).map(([k, x]) => `${k.padEnd(18)} ${x}`).join('\n');
  console.log(printed);

  // Signatures are RFC 6979 (deterministic) and low-s, v = 27/28: reproducible byte for byte.
  assert.equal(ethers.verifyTypedData(dom, VOUCHER_TYPES, voucher, voucherSig), payer.address);
  assert.equal(ethers.verifyTypedData(dom, BID_TYPES, bid, bidSig), payer.address);
  assert.ok([27, 28].includes(ethers.getBytes(voucherSig)[64]));

  // The contract at that address computes the same digests.
  const c = await deployChannels(payer);
  assert.equal(await c.getAddress(), contract);
  assert.equal(hex(await c.domainSeparator()), v['domain separator']);
  assert.equal(hex(await c.VOUCHER_TYPEHASH()), v['voucher typehash']);
  assert.equal(hex(await c.BID_TYPEHASH()), v['bid typehash']);
  assert.equal(hex(await c.voucherDigest(CHANNEL, seeder.address, AMOUNT)), v['voucher digest']);
  assert.equal(hex(await c.bidDigest(CHANNEL, seeder.address, PRICE, CAP)), v['bid digest']);

  const expiry = BigInt((await chain.provider.getBlock('latest')).timestamp) + 3600n;
  await (await c.open(CHANNEL, seeder.address, expiry, 2n * BTT, { value: 2n * BTT })).wait();
  // Today's v1 voucher for the same channel, payee and amount (the signature of §3's v1 example
  // vector) is refused: the node must switch formats before its vouchers can be claimed here.
  const v1 = '0xaa2699ee8062b71f64d843be5635fb897349552af9da9a608598eccea78f86cd1413516bd3faf868439d06afd4f1b429a5acd4395828a50b1d9187a9078b54c11b';
  assert.ok(doc.includes(v1.slice(2)));
  const v1Digest = ethers.keccak256(ethers.AbiCoder.defaultAbiCoder().encode(
    ['bytes32', 'uint256', 'bytes32', 'address', 'uint256'],
    [ethers.id('ringseed-voucher-v1'), CHAIN_ID, CHANNEL, seeder.address, AMOUNT],
  ));
  assert.equal(ethers.recoverAddress(v1Digest, v1), payer.address); // a good v1 voucher
  await assert.rejects(c.connect(seeder).claim.staticCall(CHANNEL, AMOUNT, v1), (e) => e.revert?.name === 'BadSignature');
  // And pays the vector voucher, sent as the documented calldata, exactly.
  const before_ = await chain.provider.getBalance(seeder.address);
  const r = await (await seeder.sendTransaction({ to: contract, data: '0x' + v['claim calldata'] })).wait();
  assert.equal(r.status, 1);
  assert.equal((await chain.provider.getBalance(seeder.address)) - before_ + r.fee, AMOUNT);

  for (const [k, x] of Object.entries(v)) {
    assert.ok(doc.includes(x), `docs/speed.md lacks the vector's ${k}: ${x}`);
  }
});

it('after a change of chain id (a fork), vouchers of the old chain no longer pay', async () => {
  // A second deployment on the same anvil, then the chain id changes under it: the contract's
  // cached domain separator must give way to one for the new chain.
  const p = chain.provider;
  const c = await deployChannels(seeder); // seeder deploys, so its address differs from the vector's
  const addr = await c.getAddress();
  const expiry = BigInt((await p.getBlock('latest')).timestamp) + 3600n;
  await (await c.connect(payer).open(CHANNEL, seeder.address, expiry, 2n * BTT, { value: 2n * BTT })).wait();
  const sigFor = (chainId, amount) =>
    payer.signTypedData(domain(chainId, addr), VOUCHER_TYPES, { channel: CHANNEL, payee: seeder.address, amount });
  const old199 = await sigFor(CHAIN_ID, BTT);
  const sep199 = await c.domainSeparator();
  await p.send('anvil_setChainId', [7]);
  try {
    assert.notEqual(await c.domainSeparator(), sep199);
    assert.equal(await c.domainSeparator(), ethers.TypedDataEncoder.hashDomain(domain(7n, addr)));
    // Send raw calls: ethers' wallet would sign the transaction for chain 199.
    const claimData = (amount, sig) => c.interface.encodeFunctionData('claim', [CHANNEL, amount, sig]);
    const call = (data) => p.call({ from: seeder.address, to: addr, data });
    await assert.rejects(call(claimData(BTT, old199)), (e) => {
      assert.equal(c.interface.parseError(e.data)?.name, 'BadSignature');
      return true;
    });
    await call(claimData(BTT, await sigFor(7n, BTT))); // does not revert
  } finally {
    await p.send('anvil_setChainId', [Number(CHAIN_ID)]);
  }
});
