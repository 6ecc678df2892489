#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs the whole suite.
# README.md names this script as the test command, and CI (.ci/run) runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Reference tools the interop tests drive (Debian packages, never mocks):
#   python3-libtorrent  libtorrent-rasterbar's Python binding (create, info-hash, recheck, peers)
#   mktorrent, transmission-cli  other torrent makers whose output ringseed must read
#   aria2  a real downloader for the seeding tests, and a seeder for the download tests
#   transmission-daemon, qbittorrent-nox  real seeders that `ringseed download` fetches from
#     (tests/download.rs), driven through their Web APIs: the daemon, not transmission-cli,
#     because one process seeds several torrents and its RPC says when its own check is done.
#     (On a host running systemd, Debian's transmission-daemon package also enables and starts
#     a system-wide daemon; the tests do not use it.)
#   rtorrent  a third BitTorrent implementation (libtorrent-rakshasa) seeding to `ringseed download`
#   opentracker  a real BitTorrent tracker (HTTP and UDP) for the tracker and swarm tests
#   systemd  systemd-analyze, to verify the shipped unit file
#   python3-pip  installs the PyPI packages below for Debian's python3
#   chromium, chromium-driver  a real browser (headless) and its WebDriver for the web UI test
#     (tests/webui.rs): the page is loaded, logged into and clicked through as a user would
#   g++  compiles libFuzzer (the libfuzzer-sys crate) for the fuzz targets' compile check below
PKGS="python3-libtorrent mktorrent transmission-cli transmission-daemon qbittorrent-nox rtorrent aria2 opentracker systemd python3-pip chromium chromium-driver g++"
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing" >&2
  $SUDO apt-get update -qq || echo "apt-get update failed; trying the install anyway" >&2
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# PyPI packages, into target/pydeps (not the system's site-packages; the scripts put it on their
# path), pinned:
#   qbittorrent-api  the client library seedbox tools use: tests/helpers/qbt_flow.py drives
#     qbittorrent-nox and ringseed's qBittorrent Web API with it (docs/qbittorrent-api.md)
#   selenium  the WebDriver client that drives chromium through chromedriver in
#     tests/helpers/webui_check.py (4.38.0: later ones want a newer certifi than PyPI mirrors
#     may have; it needs nothing newer from chromedriver than the W3C protocol)
PYDEPS="qbittorrent-api==2026.10.1 selenium==4.38.0"
if [ ! -d target/pydeps/qbittorrent_api-2026.10.1.dist-info ] || [ ! -d target/pydeps/selenium-4.38.0.dist-info ]; then
  echo "installing into target/pydeps: $PYDEPS" >&2
  # shellcheck disable=SC2086
  /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade \
    --target target/pydeps $PYDEPS
fi

# npm packages for the payment-channel contract's tests (tests/contract.rs runs
# contracts/test/*.test.mjs), pinned in contracts/package.json and its package-lock.json, into
# contracts/node_modules (not in git):
#   solc  the Solidity compiler as JavaScript: compiles contracts/PaymentChannel.sol offline
#   @foundry-rs/anvil  a local EVM node (the real anvil binary, shipped in its platform package,
#     so its download-fallback install script is not needed: --ignore-scripts)
#   ethers  signs vouchers as wallets do (EIP-712 typed data) and talks to anvil
# Node.js and npm come with this kind of machine; Debian's are installed where they are missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing: nodejs npm" >&2
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if ! cmp -s contracts/package-lock.json contracts/node_modules/.ringseed-installed-lock; then
  echo "installing into contracts/node_modules (npm ci)" >&2
  npm ci --prefix contracts --ignore-scripts --no-audit --no-fund
  cp contracts/package-lock.json contracts/node_modules/.ringseed-installed-lock
fi

# The fuzz targets (fuzz/, a crate of its own that the main build never compiles) must keep
# compiling as the code they drive changes; only running them needs nightly and cargo-fuzz.
# peer_session had stopped compiling unnoticed once (session 21).
cargo check --locked --quiet --manifest-path fuzz/Cargo.toml --bins

exec cargo test --locked "$@"
