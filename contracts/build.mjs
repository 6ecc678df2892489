// Compiles the contracts with solcjs (the npm package `solc`, pinned in package.json) and writes
// build/PaymentChannel.json: { compiler, settings, abi, bytecode } (and build/test-contracts.json). The settings are fixed here so
// that the committed artifact is reproducible (test/build.test.mjs compiles again and compares)
// and the Rust side can embed it.
//
//   node build.mjs           writes build/*.json
//   node build.mjs --check   exits 1 if a committed file differs from a fresh compile
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

const here = dirname(fileURLToPath(import.meta.url));

// `paris` (no PUSH0, MCOPY or transient storage): BTTC and other chains that trail Ethereum's
// hard forks run it, and it costs nothing this contract needs.
export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'paris',
  // No metadata hash: it embeds the source's path and whitespace, which would make the
  // bytecode change with edits that change nothing.
  metadata: { bytecodeHash: 'none', appendCBOR: false },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

/** Compiles `files` (names relative to contracts/) and returns solc's output; throws on errors. */
export function compile(files) {
  const sources = {};
  for (const f of files) sources[f] = { content: readFileSync(join(here, f), 'utf8') };
  const out = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings: SETTINGS })));
  const errors = (out.errors || []).filter((e) => e.severity === 'error');
  const warnings = (out.errors || []).filter((e) => e.severity !== 'error');
  if (errors.length > 0 || warnings.length > 0) {
    throw new Error((out.errors || []).map((e) => e.formattedMessage).join('\n'));
  }
  return out;
}

const TEST_SOURCES = ['test/TestToken.sol', 'test/ReentrantPayee.sol'];

/**
 * The artifacts, by file name under build/: PaymentChannel.json (what the Rust side embeds) and
 * test-contracts.json (the tests' token and re-entrant payee, committed so that the tests need
 * no compiler run of their own). One solc run for all.
 */
export function artifacts() {
  const out = compile(['PaymentChannel.sol', ...TEST_SOURCES]);
  const c = out.contracts['PaymentChannel.sol'].PaymentChannel;
  const json = {
    contract: 'PaymentChannel',
    source: 'contracts/PaymentChannel.sol',
    compiler: `solc ${solc.version()}`,
    settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion, metadata: SETTINGS.metadata },
    abi: c.abi,
    bytecode: '0x' + c.evm.bytecode.object,
    deployedBytecode: '0x' + c.evm.deployedBytecode.object,
  };
  const tests = {};
  for (const f of TEST_SOURCES) {
    for (const [name, t] of Object.entries(out.contracts[f])) {
      tests[name] = { source: `contracts/${f}`, abi: t.abi, bytecode: '0x' + t.evm.bytecode.object };
    }
  }
  const text = (j) => JSON.stringify(j, null, 2) + '\n';
  return { 'PaymentChannel.json': text(json), 'test-contracts.json': text(tests) };
}

export const BUILD_DIR = join(here, 'build');

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fresh = artifacts();
  mkdirSync(BUILD_DIR, { recursive: true });
  let stale = false;
  for (const [name, text] of Object.entries(fresh)) {
    const path = join(BUILD_DIR, name);
    if (process.argv.includes('--check')) {
      let committed = '';
      try {
        committed = readFileSync(path, 'utf8');
      } catch {}
      if (committed !== text) {
        console.error(`build/${name} differs from a fresh compile: run \`node build.mjs\``);
        stale = true;
      }
    } else {
      writeFileSync(path, text);
      console.log(`wrote ${path}`);
    }
  }
  process.exit(stale ? 1 : 0);
}
