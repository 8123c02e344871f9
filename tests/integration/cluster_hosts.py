"""vmmsd hosts in one cluster on this machine: three private etcd members (etcd_cluster.py)
and hosts that join them with --cluster, each with its own hvd, directories, ports and a
certificate from one test CA (so they can also move VMs to each other over mutual TLS)."""
import os
import subprocess
import tempfile
from pathlib import Path

from etcd_cluster import EtcdCluster, free_ports
from test_access import make_ca, make_cert
from vmms_host import BUILD
from vmmsd_host import VmmsdHost

VMCTL = BUILD / "cli" / "vmctl"
HOST_EXT = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth,serverAuth"
HOST_NAMES = ("hosta", "hostb", "hostc")
# The watchdog fences TTL - TTL/4 after the last renewal left, renewals come every TTL/3: 4 s leaves
# 1.7 s for a renewal to come late (an etcd election, a loaded 2-core machine) without a fence.
LEASE_TTL = 4


class ClusterHosts:
    """Mixin: setUpClass starts etcd and makes the certificates; join() starts a host."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="vmms-cluster-")
        d = cls.dir = Path(cls._tmp.name)
        make_ca(d, "ca")
        for name in HOST_NAMES:
            make_cert(d, "ca", name, f"/CN={name}", HOST_EXT)
        cls.etcd = EtcdCluster()

    @classmethod
    def tearDownClass(cls):
        cls.etcd.close()
        cls._tmp.cleanup()

    @classmethod
    def join(cls, name, hvd_memory="1GB", ttl=LEASE_TTL, extra=()):
        port = free_ports(1)[0]
        d = cls.dir
        conf = d / f"{name}.conf"
        conf.write_text("[access]\nmigration-peers=" + ";".join(f"CN={n}" for n in HOST_NAMES) + "\n")
        host = VmmsdHost(hvd_memory=hvd_memory, extra=(
            "--config", str(conf), "--tls-cert", str(d / f"{name}.pem"), "--tls-key", str(d / f"{name}.key"),
            "--tls-ca", str(d / "ca.pem"), "--migration-listen", f"127.0.0.1:{port}", "--migration-name", name,
            "--cluster", f"etcd={cls.etcd.endpoints}", "--host-name", name,
            "--cluster-lease-ttl", str(ttl), *extra))
        host.name = name
        host.address = f"127.0.0.1:{port}"
        return host


def nodes(host):
    """{name: ClusterNode} as host reads them from etcd."""
    return {n.name: n for n in host.api.ListClusterNodes(host.pb.ListClusterNodesRequest(), timeout=10).nodes}


def states(host):
    """{name: 'UP' | 'DOWN' | 'PAUSED'}."""
    pb = host.pb
    return {name: pb.ClusterNodeState.Name(n.state).rsplit("_", 1)[1] for name, n in nodes(host).items()}


def vmctl(host, *args, timeout=60):
    env = dict(os.environ, VMMS_SOCKET=str(host.socket))
    return subprocess.run([str(VMCTL), *args], capture_output=True, text=True, timeout=timeout, env=env)


def cluster_vms(host, pattern=""):
    """{name: Vm} of every VM in the cluster, each with .host, as host reads them."""
    pb = host.pb
    return {v.name: v for v in host.api.ListVms(pb.ListVmsRequest(name_filter=pattern, cluster=True), timeout=10).vms}


def owner_record(etcd, host, vm_id):
    """The ClusterVm at /vmms/vms/<id>, None when absent."""
    raw = etcd.get(f"/vmms/vms/{vm_id}")
    if raw is None:
        return None
    cv = host.pb.ClusterVm()
    cv.ParseFromString(raw)
    return cv
