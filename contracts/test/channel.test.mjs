// PaymentChannel on a real local EVM (anvil, chain 199): every path that moves money, every
// refusal, and the gas of the common calls. Vouchers are signed with ethers' signTypedData,
// which is what wallets (eth_signTypedData_v4) produce.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ethers } from 'ethers';
import {
  ABI, BTT, CHAIN_ID, startChain, fundedWallet, deployChannels, deployTest, signVoucher, passTime, now,
} from './chain.mjs';

const DAY = 86400n;
let chain, provider, payer, payee, other, stranger, deployer;
const gas = {};
const errors = new ethers.Interface(ABI);

function id(n) {
  return ethers.zeroPadValue(ethers.toBeHex(n), 32);
}

/** Asserts that `p` reverts with the contract's custom error `name`. */
async function reverts(p, name) {
  await assert.rejects(p, (e) => {
    // A failed send surfaces as the node's estimateGas error, with the revert data undecoded.
    const data = e.revert ? null : e.data ?? e.info?.error?.data;
    const got = e.revert?.name ?? (data && errors.parseError(data)?.name) ?? e.shortMessage ?? String(e);
    assert.equal(got, name, `expected revert ${name}, got ${got}`);
    return true;
  });
}

async function mined(txPromise) {
  const tx = await txPromise;
  const r = await tx.wait();
  assert.equal(r.status, 1);
  return r;
}

/** Sends `call` from `wallet` and returns what its native balance changed by, fees put back. */
async function nativeDelta(wallet, call) {
  const before = await provider.getBalance(wallet.address);
  const r = await mined(call());
  const after_ = await provider.getBalance(wallet.address);
  return { delta: after_ - before + r.fee, receipt: r };
}

async function openNative(c, cid, { to = payee, amount = 10n * BTT, expiry } = {}) {
  expiry ??= (await now(provider)) + DAY;
  return mined(c.connect(payer).open(cid, to.address ?? to, expiry, amount, { value: amount }));
}

before(async () => {
  chain = await startChain();
  provider = chain.provider;
  payer = await fundedWallet(provider, 0x01);
  payee = await fundedWallet(provider, 0x02);
  other = await fundedWallet(provider, 0x03);
  stranger = await fundedWallet(provider, 0x04);
  deployer = await fundedWallet(provider, 0x05);
});

after(() => {
  chain?.stop();
  const lines = Object.entries(gas).map(([k, v]) => `gas ${k}: ${v}`);
  // Printed for docs/design.md; the Rust wrapper (tests/contract.rs) echoes it.
  console.log(lines.join('\n'));
});

describe('native coin (BTT)', () => {
  let c, addr;
  before(async () => {
    c = await deployChannels(deployer);
    addr = await c.getAddress();
  });

  it('opens a funded channel and records it', async () => {
    const expiry = (await now(provider)) + DAY;
    const r = await openNative(c, id(1), { expiry });
    gas['open (native)'] = r.gasUsed;
    assert.equal(await provider.getBalance(addr), 10n * BTT);
    const ch = await c.channels(id(1));
    assert.deepEqual([ch.payer, ch.expiry, ch.payee, ch.deposit, ch.claimed], [payer.address, expiry, payee.address, 10n * BTT, 0n]);
    const ev = r.logs.map((l) => c.interface.parseLog(l)).find((e) => e?.name === 'Opened');
    assert.deepEqual([...ev.args], [id(1), payer.address, payee.address, 10n * BTT, expiry]);
    await reverts(openNative(c, id(1)), 'ChannelExists');
    await reverts(openNative(c, id(2), { expiry: (await now(provider)) - 1n }), 'BadExpiry');
    await reverts(c.connect(payer).open(id(2), payee.address, (await now(provider)) + DAY, 5n, { value: 4n }), 'BadValue');
    await reverts(openNative(c, id(2), { to: payer }), 'BadPayee');
    await reverts(openNative(c, id(2), { to: ethers.ZeroAddress }), 'BadPayee');
  });

  it('pays the latest cumulative voucher minus what was claimed, to the base unit, never twice', async () => {
    const v = async (amount) => signVoucher(payer, { contract: addr, channel: id(1), payee: payee.address, amount });
    const first = 2n * BTT + 123n;
    const sig1 = await v(first);
    let { delta, receipt } = await nativeDelta(payee, () => c.connect(payee).claim(id(1), first, sig1));
    assert.equal(delta, first);
    gas['first claim (native)'] = receipt.gasUsed;
    const ev = receipt.logs.map((l) => c.interface.parseLog(l)).find((e) => e?.name === 'Claimed');
    assert.deepEqual([...ev.args], [id(1), payee.address, first, first]);

    const second = 3n * BTT;
    const sig2 = await v(second);
    ({ delta, receipt } = await nativeDelta(payee, () => c.connect(payee).claim(id(1), second, sig2)));
    assert.equal(delta, second - first);
    gas['later claim (native)'] = receipt.gasUsed;

    // The same voucher again, an older one, and an equal amount: nothing more to pay.
    await reverts(c.connect(payee).claim(id(1), second, sig2), 'NothingToClaim');
    await reverts(c.connect(payee).claim(id(1), first, sig1), 'NothingToClaim');
    assert.equal((await c.channels(id(1))).claimed, second);
    assert.equal(await provider.getBalance(addr), 10n * BTT - second);
  });

  it('refuses vouchers that are not for this payee, chain, channel or contract, or not by the payer', async () => {
    const amount = 4n * BTT;
    const base = { contract: addr, channel: id(1), payee: payee.address, amount };
    const claim = (sig, who = payee) => c.connect(who).claim(id(1), amount, sig);
    await reverts(claim(await signVoucher(other, base)), 'BadSignature');
    await reverts(claim(await signVoucher(payer, { ...base, payee: other.address })), 'BadSignature');
    await reverts(claim(await signVoucher(payer, { ...base, chainId: 1n })), 'BadSignature');
    await reverts(claim(await signVoucher(payer, { ...base, channel: id(99) })), 'BadSignature');
    const elsewhere = await deployChannels(deployer);
    const sigElsewhere = await signVoucher(payer, { ...base, contract: await elsewhere.getAddress() });
    await reverts(claim(sigElsewhere), 'BadSignature');
    // An amount other than the one signed.
    await reverts(c.connect(payee).claim(id(1), amount + 1n, await signVoucher(payer, base)), 'BadSignature');

    const good = await signVoucher(payer, base);
    // Only the payee may claim, even with a good voucher.
    await reverts(claim(good, stranger), 'NotPayee');
    await reverts(claim(good, payer), 'NotPayee');
    await reverts(c.connect(payee).claim(id(77), amount, good), 'NoSuchChannel');
    // Signature forms ecrecover would take but no wallet produces: the malleable high-s twin,
    // v = 0/1, and a wrong length.
    const s = ethers.Signature.from(good);
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const twin = ethers.concat([s.r, ethers.toBeHex(n - BigInt(s.s), 32), s.v === 27 ? '0x1c' : '0x1b']);
    // The twin is a valid signature for the bare ecrecover precompile (address 1)...
    const digest = await c.voucherDigest(id(1), payee.address, amount);
    const raw = await provider.call({
      to: '0x0000000000000000000000000000000000000001',
      data: ethers.concat([digest, ethers.toBeHex(s.v === 27 ? 28 : 27, 32), s.r, ethers.toBeHex(n - BigInt(s.s), 32)]),
    });
    assert.equal(ethers.getAddress(ethers.dataSlice(raw, 12)), payer.address);
    // ...and the contract refuses it.
    await reverts(claim(twin), 'BadSignature');
    await reverts(claim(ethers.concat([s.r, s.s, ethers.toBeHex(s.v - 27, 1)])), 'BadSignature');
    await reverts(claim(ethers.concat([good, '0x00'])), 'BadSignature');
    // All the refusals above paid nothing; the good voucher still pays the exact difference.
    const { delta } = await nativeDelta(payee, () => claim(good));
    assert.equal(delta, BTT);
  });

  it('pays at most the deposit, and the rest of a voucher after a top-up', async () => {
    await openNative(c, id(3), { amount: 5n });
    const sig = await signVoucher(payer, { contract: addr, channel: id(3), payee: payee.address, amount: 8n });
    let { delta } = await nativeDelta(payee, () => c.connect(payee).claim(id(3), 8n, sig));
    assert.equal(delta, 5n);
    await reverts(c.connect(payee).claim(id(3), 8n, sig), 'NothingToClaim');
    const r = await mined(c.connect(stranger).topUp(id(3), 2n, { value: 2n }));
    gas['top-up (native)'] = r.gasUsed;
    ({ delta } = await nativeDelta(payee, () => c.connect(payee).claim(id(3), 8n, sig)));
    assert.equal(delta, 2n);
    await mined(c.connect(payer).topUp(id(3), 10n, { value: 10n }));
    ({ delta } = await nativeDelta(payee, () => c.connect(payee).claim(id(3), 8n, sig)));
    assert.equal(delta, 1n);
    await reverts(c.connect(payee).claim(id(3), 8n, sig), 'NothingToClaim');
    await reverts(c.connect(payer).topUp(id(3), 1n, { value: 2n }), 'BadValue');
    await reverts(c.connect(payer).topUp(id(88), 1n, { value: 1n }), 'NoSuchChannel');
  });

  it('lets the payer reclaim the remainder only after the expiry; the payee may claim until then', async () => {
    const expiry = (await now(provider)) + DAY;
    await openNative(c, id(4), { amount: 10n * BTT, expiry });
    const v = (amount) => signVoucher(payer, { contract: addr, channel: id(4), payee: payee.address, amount });
    await mined(c.connect(payee).claim(id(4), 3n * BTT, await v(3n * BTT)));
    await reverts(c.connect(payer).reclaim(id(4)), 'NotExpired');
    await passTime(provider, DAY - 100n);
    await reverts(c.connect(payer).reclaim(id(4)), 'NotExpired');
    await passTime(provider, 200n);
    assert.ok((await now(provider)) >= expiry);
    await reverts(c.connect(payer).topUp(id(4), 1n, { value: 1n }), 'Expired');
    await reverts(c.connect(payee).reclaim(id(4)), 'NotPayer');
    // Past the expiry but before the reclaim, a claim still pays.
    let { delta } = await nativeDelta(payee, async () => c.connect(payee).claim(id(4), 4n * BTT, await v(4n * BTT)));
    assert.equal(delta, BTT);
    let receipt;
    ({ delta, receipt } = await nativeDelta(payer, () => c.connect(payer).reclaim(id(4))));
    assert.equal(delta, 6n * BTT);
    gas['reclaim (native)'] = receipt.gasUsed;
    await reverts(c.connect(payer).reclaim(id(4)), 'NothingToReclaim');
    await reverts(c.connect(payee).claim(id(4), 5n * BTT, await v(5n * BTT)), 'NothingToClaim');
    const ch = await c.channels(id(4));
    assert.deepEqual([ch.deposit, ch.claimed], [4n * BTT, 4n * BTT]);
    // The id stays taken.
    await reverts(openNative(c, id(4)), 'ChannelExists');
  });

  it('pays a re-entrant payee once', async () => {
    const evil = await deployTest(deployer, 'ReentrantPayee', addr);
    const evilAddr = await evil.getAddress();
    await openNative(c, id(5), { to: evilAddr, amount: 10n });
    const sig = await signVoucher(payer, { contract: addr, channel: id(5), payee: evilAddr, amount: 6n });
    await mined(evil.connect(stranger).claim(id(5), 6n, sig));
    assert.equal(await evil.reentered(), true);
    assert.equal(await evil.innerSucceeded(), false);
    assert.equal(await provider.getBalance(evilAddr), 6n);
    assert.equal((await c.channels(id(5))).claimed, 6n);
  });
});

describe('ERC-20 token', () => {
  async function setup(mode) {
    const token = await deployTest(deployer, 'TestToken', mode);
    const c = await deployChannels(deployer, await token.getAddress());
    await mined(token.mint(payer.address, 100n * BTT));
    await mined(token.connect(payer).approve(await c.getAddress(), 100n * BTT));
    return { token, c, addr: await c.getAddress() };
  }

  for (const [mode, label] of [[0, 'returning true'], [1, 'returning nothing']]) {
    it(`opens, claims and reclaims with a token ${label}`, async () => {
      const { token, c, addr } = await setup(mode);
      const expiry = (await now(provider)) + DAY;
      await reverts(c.connect(payer).open(id(1), payee.address, expiry, 10n * BTT, { value: 1n }), 'BadValue');
      let r = await mined(c.connect(payer).open(id(1), payee.address, expiry, 10n * BTT));
      if (mode === 0) gas['open (ERC-20)'] = r.gasUsed;
      assert.equal(await token.balanceOf(addr), 10n * BTT);
      assert.equal(await token.balanceOf(payer.address), 90n * BTT);
      const v = (amount) => signVoucher(payer, { contract: addr, channel: id(1), payee: payee.address, amount });
      r = await mined(c.connect(payee).claim(id(1), 4n * BTT + 1n, await v(4n * BTT + 1n)));
      if (mode === 0) gas['first claim (ERC-20)'] = r.gasUsed;
      r = await mined(c.connect(payee).claim(id(1), 7n * BTT, await v(7n * BTT)));
      if (mode === 0) gas['later claim (ERC-20)'] = r.gasUsed;
      assert.equal(await token.balanceOf(payee.address), 7n * BTT);
      await reverts(c.connect(payee).claim(id(1), 7n * BTT, await v(7n * BTT)), 'NothingToClaim');
      await reverts(c.connect(payer).reclaim(id(1)), 'NotExpired');
      await passTime(provider, DAY);
      await mined(c.connect(payer).reclaim(id(1)));
      assert.equal(await token.balanceOf(payer.address), 93n * BTT);
      assert.equal(await token.balanceOf(addr), 0n);
      // More than the approval: the token refuses, and so does the open.
      await reverts(c.connect(payer).open(id(2), payee.address, (await now(provider)) + DAY, 91n * BTT), 'TransferFailed');
    });
  }

  it('refuses a token that returns false, and a token address without code', async () => {
    const { c } = await setup(2);
    await reverts(c.connect(payer).open(id(1), payee.address, (await now(provider)) + DAY, BTT), 'TransferFailed');
    await reverts(deployChannels(deployer, stranger.address), 'NotAToken');
  });
});

it('runs on chain 199', async () => {
  assert.equal((await provider.getNetwork()).chainId, CHAIN_ID);
});
