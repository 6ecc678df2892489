#!/usr/bin/python3
"""libtorrent (python3-libtorrent 2.0) DHT sessions on loopback for tests/dht.rs.

  lt_dht.py node
      A DHT-only session (no torrents) on 127.0.0.1, bootstrapped to nothing. Prints
      "dht PORT" once listening, then one line per DHT request it receives for an info-hash:
      "announce HEX IP PORT" (announce_peer) and "get_peers HEX" (get_peers), until killed.
  lt_dht.py seed TORRENT SAVE_PATH
      A DHT-only bootstrap node B and a seeder S bootstrapped to B, with DHT on and no trackers.
      Prints "ready DHT_PORT PEER_PORT" (B's UDP port, S's listening port) once B has stored S's
      announce, then runs until killed.
  lt_dht.py announce TORRENT SAVE_PATH NODE_PORT
      A seeder whose only DHT node is 127.0.0.1:NODE_PORT. Prints "seeding PEER_PORT" at once
      and announces the torrent to the DHT every second until killed.
  lt_dht.py leech MAGNET SAVE_PATH BOOTSTRAP_PORT [TIMEOUT_S] [retry|once]
      A session with DHT on, bootstrapped to 127.0.0.1:BOOTSTRAP_PORT only, that adds MAGNET
      (no trackers, no peers: the DHT is its only source). Prints "listening PORT" at once,
      then JSON {"done": bool, "seconds", "metadata_s", "peers": [...]} once complete or timed
      out. It asks the DHT again every 3 s ("retry", the default) or only when the torrent is
      added ("once", libtorrent's own pace: then not again for 15 minutes), so with "once" a
      seed that appears later reaches it only by dialling it.
  lt_dht.py table NODE_PORT [TIMEOUT_S]
      A DHT-only session given 127.0.0.1:NODE_PORT as its one node, and nothing else. libtorrent
      keeps a node in its routing table only once the node has answered it, so this prints JSON
      {"nodes": ["IP:PORT", ...], "seconds"} as soon as the node is in the table (or what the
      table holds at the timeout, 20 s by default).

libtorrent refuses loopback DHT nodes and peers unless dht_restrict_routing_ips,
dht_restrict_search_ips, dht_enforce_node_id, dht_ignore_dark_internet and
dht_prefer_verified_node_ids are all off (TESTING-NOTES.md); its default bootstrap node
(dht.libtorrent.org) is cleared so nothing leaves the machine.
"""
import faulthandler
import json
import os
import sys
import time
import warnings

import libtorrent as lt
from lt_flush import wait_flushed

faulthandler.enable()


def settings(extra=None):
    s = {
        "enable_dht": True, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": "127.0.0.1:0",
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.dht_notification
        | lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    }
    s.update(extra or {})
    return s


def wait_listening(ses):
    deadline = time.monotonic() + 20
    while not ses.is_listening() and time.monotonic() < deadline:
        ses.wait_for_alert(50)
        ses.pop_alerts()
    return ses.listen_port()


def add_seed(ses, path, save_path):
    """Adds the torrent at `path` to `ses` as a seed of the data in `save_path`, started."""
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(path)
    params.save_path = save_path
    params.flags |= lt.torrent_flags.seed_mode
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    return ses.add_torrent(params)


def node():
    ses = lt.session(settings())
    print("dht %d" % wait_listening(ses), flush=True)
    while True:
        ses.wait_for_alert(1000)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_announce_alert):
                print("announce %s %s %d" % (a.info_hash, a.ip, a.port), flush=True)
            elif isinstance(a, lt.dht_get_peers_alert):
                print("get_peers %s" % a.info_hash, flush=True)


def seed(path, save_path):
    boot = lt.session(settings())
    boot_port = wait_listening(boot)
    ses = lt.session(settings())
    peer_port = wait_listening(ses)
    ses.add_dht_node(("127.0.0.1", boot_port))
    h = add_seed(ses, path, save_path)
    want = str(h.torrent_file().info_hashes().v1)
    deadline = time.monotonic() + 30
    announced = False
    asked = 0.0
    while time.monotonic() < deadline and not announced:
        boot.wait_for_alert(100)
        for a in boot.pop_alerts():
            if isinstance(a, lt.dht_announce_alert) and str(a.info_hash) == want:
                announced = True
        ses.pop_alerts()
        if not announced and time.monotonic() - asked > 2:
            # Ask again until the bootstrap node has it: the first announce may go out before
            # the seeder knows any node.
            asked = time.monotonic()
            h.force_dht_announce()
    if not announced:
        print("not announced", flush=True)
        os._exit(1)
    print("ready %d %d" % (boot_port, peer_port), flush=True)
    while True:
        boot.wait_for_alert(1000)
        boot.pop_alerts()
        ses.pop_alerts()


def announce(path, save_path, node_port):
    ses = lt.session(settings())
    peer_port = wait_listening(ses)
    ses.add_dht_node(("127.0.0.1", int(node_port)))
    h = add_seed(ses, path, save_path)
    print("seeding %d" % peer_port, flush=True)
    while True:
        ses.wait_for_alert(1000)
        ses.pop_alerts()
        h.force_dht_announce()


def leech(magnet, save_path, bootstrap_port, timeout="60", mode="retry"):
    # Plain TCP out, as lt_tool.py's download: libtorrent would try an encrypted handshake
    # first and fall back only after a timeout.
    ses = lt.session(settings({"out_enc_policy": 2, "in_enc_policy": 1}))
    print("listening %d" % wait_listening(ses), flush=True)
    ses.add_dht_node(("127.0.0.1", int(bootstrap_port)))
    params = lt.parse_magnet_uri(magnet)
    params.save_path = save_path
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    start = time.monotonic()
    h = ses.add_torrent(params)
    deadline = start + float(timeout)
    metadata_s = None
    peers = set()
    asked = time.monotonic()
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        ses.pop_alerts()
        s = h.status()
        if metadata_s is None and s.has_metadata:
            metadata_s = time.monotonic() - start
        for p in h.get_peer_info():
            peers.add("%s:%d" % p.ip)
        if s.is_seeding:
            break
        if mode == "retry" and time.monotonic() - asked > 3:
            # libtorrent looks a new torrent up at once, then every dht_announce_interval
            # (15 min): ask again while nothing arrives.
            asked = time.monotonic()
            h.force_dht_announce()
    s = h.status()
    seconds = time.monotonic() - start
    if s.is_seeding:
        # Seen once as a file that differed from the payload, under load, before this wait.
        wait_flushed(ses, h)
    print(json.dumps({"done": bool(s.is_seeding), "seconds": seconds,
                      "metadata_s": metadata_s, "state": str(s.state),
                      "peers": sorted(peers)}), flush=True)
    os._exit(0)  # skip the session teardown (the binding has crashed in it under load)


def table(node_port, timeout="20"):
    ses = lt.session(settings())
    wait_listening(ses)
    want = "127.0.0.1:%d" % int(node_port)
    ses.add_dht_node(("127.0.0.1", int(node_port)))
    start = time.monotonic()
    nodes = []
    while time.monotonic() - start < float(timeout) and want not in nodes:
        ses.wait_for_alert(250)
        ses.pop_alerts()
        # The saved state's "nodes" are the routing table's, 6 compact bytes each (IPv4 and
        # port). dht_state() is deprecated in 2.0 but is the binding's one way to read them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = ses.dht_state()
        nodes = ["%d.%d.%d.%d:%d" % (n[0], n[1], n[2], n[3], n[4] << 8 | n[5])
                 for n in state.get(b"nodes", []) if len(n) == 6]
    print(json.dumps({"nodes": nodes, "seconds": time.monotonic() - start}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"node": node, "seed": seed, "announce": announce, "leech": leech, "table": table}[cmd](*args)
