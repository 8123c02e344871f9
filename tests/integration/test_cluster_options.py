"""The cluster's settings, checked before vmmsd starts anything (a bad --cluster,
--host-name, --host-address, --cluster-lease-ttl or --cluster-auto-balance is refused by name, exit 2), and a
host outside a cluster refusing Get-ClusterNode and Get-VM -Cluster with the flags that
would put it in one.
The cluster itself (three etcd members, three hosts) is test_cluster.py, suite cluster."""
import subprocess
import tempfile
import unittest

from cluster_hosts import vmctl
from vmmsd_host import VMMSD, VmmsdHost


class ClusterOptions(unittest.TestCase):
    def run_vmmsd(self, *args):
        with tempfile.TemporaryDirectory(prefix="vmms-cluster-opts-") as d:
            return subprocess.run([str(VMMSD), "--state-dir", f"{d}/state", "--runtime-dir", f"{d}/run",
                                   "--dbus", "none", "--no-spawn-hvd", *args],
                                  capture_output=True, text=True, timeout=30)

    def test_bad_cluster_settings_are_refused_by_name(self):
        ok = ("--cluster", "etcd=127.0.0.1:2379", "--host-name", "hosta", "--host-address", "127.0.0.1:7443")
        cases = [
            ("spec without etcd=", ("--cluster", "127.0.0.1:2379", "--host-name", "a", "--host-address", "h:1"),
             "--cluster '127.0.0.1:2379' is not etcd=IP:PORT"),
            ("endpoint without port", ("--cluster", "etcd=127.0.0.1", "--host-name", "a", "--host-address", "h:1"),
             "etcd endpoint '127.0.0.1' is not HOST:PORT"),
            ("several members by name", ("--cluster", "etcd=a:1,b:2", "--host-name", "a", "--host-address", "h:1"),
             "each must be an IPv4 address and port"),
            ("host name with a slash", ("--cluster", "etcd=127.0.0.1:2379", "--host-name", "a/b",
                                        "--host-address", "h:1"), "--host-name 'a/b' is not"),
            ("no host address", ("--cluster", "etcd=127.0.0.1:2379", "--host-name", "a"),
             "--host-address '' is not HOST:PORT"),
            ("lease under etcd's minimum", (*ok, "--cluster-lease-ttl", "1"),
             "--cluster-lease-ttl 1 is out of range 2-3600"),
            ("host name off a cluster", ("--host-name", "a"), "give --cluster etcd=IP:PORT"),
            ("auto-balance over the pressure cap", (*ok, "--cluster-auto-balance", "1001"),
             "--cluster-auto-balance 1001 is out of range 1-1000"),
            ("negative auto-balance", (*ok, "--cluster-auto-balance", "-5"),
             "--cluster-auto-balance -5 is out of range 1-1000"),
            ("auto-balance off a cluster", ("--cluster-auto-balance", "100"), "give --cluster etcd=IP:PORT"),
        ]
        for what, args, message in cases:
            with self.subTest(what):
                r = self.run_vmmsd(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(message, r.stderr)

    def test_host_off_a_cluster_refuses_get_cluster_node_and_get_vm_cluster(self):
        with VmmsdHost() as host:
            r = vmctl(host, "Get-ClusterNode")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("this host is not in a cluster", r.stderr)
            self.assertIn("--cluster etcd=", r.stderr)
            r = vmctl(host, "Get-VM", "-Cluster")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("Get-VM -Cluster needs vmmsd --cluster", r.stderr)


if __name__ == "__main__":
    unittest.main()
