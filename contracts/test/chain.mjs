// A local chain for the tests: a real anvil (from the npm package @foundry-rs/anvil, pinned in
// package.json) on a free loopback port with chain id 199 (BTTC's), and ethers v6 to talk to it
// and to sign vouchers the way wallets do (EIP-712 typed data).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ethers } from 'ethers';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

export const CHAIN_ID = 199n;
export const BTT = 10n ** 18n;

/** The EIP-712 types of docs/speed.md §3 (v2). */
export const VOUCHER_TYPES = {
  Voucher: [
    { name: 'channel', type: 'bytes32' },
    { name: 'payee', type: 'address' },
    { name: 'amount', type: 'uint256' },
  ],
};
export const BID_TYPES = {
  Bid: [
    { name: 'channel', type: 'bytes32' },
    { name: 'payee', type: 'address' },
    { name: 'price', type: 'uint256' },
    { name: 'cap', type: 'uint256' },
  ],
};

export function domain(chainId, verifyingContract) {
  return { name: 'ringseed', version: '1', chainId, verifyingContract };
}

/** The payer's side: an EIP-712 voucher signature (r ‖ s ‖ v, v = 27/28), as a wallet makes it. */
export function signVoucher(wallet, { chainId = CHAIN_ID, contract, channel, payee, amount }) {
  return wallet.signTypedData(domain(chainId, contract), VOUCHER_TYPES, { channel, payee, amount });
}

/** The anvil binary of the platform package (the npm package's launcher is a node wrapper). */
function anvilBinary() {
  const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch];
  const pkg = `@foundry-rs/anvil-${process.platform}-${arch}`;
  return join(dirname(require.resolve(`${pkg}/package.json`)), 'bin', 'anvil');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts anvil on 127.0.0.1 (chain 199), waits until it answers, and returns
 * { provider, url, stop }. No mnemonic accounts are used: the tests fund their own keys with
 * anvil_setBalance.
 */
export async function startChain() {
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = spawn(
      anvilBinary(),
      ['--host', '127.0.0.1', '--port', String(port), '--chain-id', String(CHAIN_ID), '--accounts', '0', '--silent'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    let exited = false;
    child.on('exit', () => (exited = true));
    const url = `http://127.0.0.1:${port}`;
    const provider = new ethers.JsonRpcProvider(url, Number(CHAIN_ID), { staticNetwork: true, cacheTimeout: -1 });
    provider.pollingInterval = 20;
    const stop = () => {
      process.off('exit', kill);
      provider.destroy();
      kill();
    };
    // Also when the test process ends without running its `after` hooks (a crash, a timeout).
    const kill = () => {
      if (!exited) child.kill('SIGTERM');
    };
    process.on('exit', kill);
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline && !exited) {
      try {
        await provider.send('eth_chainId', []);
        return { provider, url, stop };
      } catch (e) {
        lastError = e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    stop();
    lastError = new Error(`anvil did not answer on ${url}: ${stderr || lastError}`);
  }
  throw lastError;
}

/** A wallet on `provider` from a 32-byte secret of one repeated byte, funded with 1000 coins. */
export async function fundedWallet(provider, byte) {
  const w = new ethers.Wallet('0x' + byte.toString(16).padStart(2, '0').repeat(32), provider);
  await provider.send('anvil_setBalance', [w.address, ethers.toQuantity(1000n * BTT)]);
  return w;
}

const artifact = JSON.parse(readFileSync(join(here, '..', 'build', 'PaymentChannel.json'), 'utf8'));
const testContracts = JSON.parse(readFileSync(join(here, '..', 'build', 'test-contracts.json'), 'utf8'));

/** Deploys the committed PaymentChannel artifact with `token` (address(0) = native coin). */
export async function deployChannels(deployer, token = ethers.ZeroAddress) {
  const f = new ethers.ContractFactory(artifact.abi, artifact.bytecode, deployer);
  const c = await f.deploy(token);
  await c.waitForDeployment();
  return c;
}

/** Deploys one of the test contracts (build/test-contracts.json). */
export async function deployTest(deployer, name, ...args) {
  const c = testContracts[name];
  const f = new ethers.ContractFactory(c.abi, c.bytecode, deployer);
  const d = await f.deploy(...args);
  await d.waitForDeployment();
  return d;
}

export const ABI = artifact.abi;

/** Moves the chain's clock past `seconds` and mines a block at the new time. */
export async function passTime(provider, seconds) {
  await provider.send('evm_increaseTime', [Number(seconds)]);
  await provider.send('evm_mine', []);
}

export async function now(provider) {
  return BigInt((await provider.getBlock('latest')).timestamp);
}
