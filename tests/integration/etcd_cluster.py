"""Three private etcd members (Debian's etcd-server) on loopback ports in a temporary
directory, for the cluster tests: started together, healthy before the test goes on, each
one killable, all of them and their data gone at the end. Data lives on /dev/shm when it
exists (each member preallocates a 62 MB WAL; fsync is off: nothing here must survive a
machine crash)."""
import base64
import json
import os
import urllib.request
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from vmms_host import wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    def __init__(self, members=3):
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._tmp = tempfile.TemporaryDirectory(prefix="vmms-etcd-", dir=base)
        self.dir = Path(self._tmp.name)
        ports = free_ports(2 * members)
        self.names = [f"m{i + 1}" for i in range(members)]
        self.client_ports = dict(zip(self.names, ports[:members]))
        self.peer_ports = dict(zip(self.names, ports[members:]))
        self.procs = {}
        self._token = "vmms-test-" + secrets.token_hex(4)
        for n in self.names:
            self.start(n)
        try:
            wait_for(self.healthy, 60, interval=0.2, what="three healthy etcd members")
        except BaseException:
            self.close()
            raise

    def start(self, n):
        """Starts member n (again: a restarted member rejoins from its data directory)."""
        c, p = self.client_ports[n], self.peer_ports[n]
        initial = ",".join(f"{m}=http://127.0.0.1:{self.peer_ports[m]}" for m in self.names)
        log = open(self.dir / f"{n}.log", "ab")
        self.procs[n] = subprocess.Popen(
            [ETCD, "--name", n, "--data-dir", str(self.dir / n),
             "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
             "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls",
             f"http://127.0.0.1:{p}", "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", self._token, "--unsafe-no-fsync", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def endpoints(self):
        """Every member, as vmmsd --cluster etcd=... takes them."""
        return ",".join(f"127.0.0.1:{self.client_ports[n]}" for n in self.names)

    def etcdctl(self, *args, members=None, timeout=20):
        eps = ",".join(f"127.0.0.1:{self.client_ports[n]}" for n in (members or self.alive_members()))
        return subprocess.run([ETCDCTL, "--endpoints", eps, "--command-timeout=5s", *args], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})

    def alive_members(self):
        return [n for n, p in self.procs.items() if p.poll() is None]

    def healthy(self):
        r = self.etcdctl("endpoint", "health", members=self.names)
        return r.returncode == 0

    def leader(self):
        """The name of the member raft elected."""
        r = self.etcdctl("endpoint", "status", "-w", "json")
        if r.returncode != 0:
            return None
        for st in json.loads(r.stdout):
            if st["Status"]["header"]["member_id"] == st["Status"]["leader"]:
                port = int(st["Endpoint"].rsplit(":", 1)[1])
                return next(n for n, p in self.client_ports.items() if p == port)
        return None

    def get_prefix(self, prefix):
        r = self.etcdctl("get", "--prefix", "--keys-only", prefix)
        return [k for k in r.stdout.splitlines() if k]

    def _gateway(self, path, body):
        """etcd's JSON gateway on a live member: bytes travel as base64."""
        port = self.client_ports[self.alive_members()[0]]
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def get(self, key):
        """The value at key (bytes), None when absent."""
        kvs = self._gateway("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def put(self, key, value):
        self._gateway("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                     "value": base64.b64encode(value).decode()})

    def delete(self, key):
        self._gateway("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})

    def kill9(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
