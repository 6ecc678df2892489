// Compiles the contracts with solcjs (the npm package `solc`, pinned in package.json) and writes
// build/PaymentChannel.json: { compiler, settings, abi, bytecode }. The settings are fixed here so
// that the committed artifact is reproducible (test/build.test.mjs compiles again and compares)
// and the Rust side can embed it.
//
//   node build.mjs           writes build/PaymentChannel.json
//   node build.mjs --check   exits 1 if the committed file differs from a fresh compile
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

/** The artifact of PaymentChannel.sol, as committed in build/PaymentChannel.json. */
export function artifact() {
  const out = compile(['PaymentChannel.sol']);
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
  return JSON.stringify(json, null, 2) + '\n';
}

export const ARTIFACT_PATH = join(here, 'build', 'PaymentChannel.json');

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fresh = artifact();
  if (process.argv.includes('--check')) {
    const committed = readFileSync(ARTIFACT_PATH, 'utf8');
    if (committed !== fresh) {
      console.error('build/PaymentChannel.json differs from a fresh compile: run `node build.mjs`');
      process.exit(1);
    }
    console.log('build/PaymentChannel.json matches a fresh compile');
  } else {
    mkdirSync(dirname(ARTIFACT_PATH), { recursive: true });
    writeFileSync(ARTIFACT_PATH, fresh);
    console.log(`wrote ${ARTIFACT_PATH}`);
  }
}
