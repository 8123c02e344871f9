"""A cluster of three vmmsd hosts on three private etcd members (suite cluster): each host
joins with a lease and a record, every host sees all three Up with their addresses and
figures, vmctl Get-ClusterNode prints them, and a host whose vmmsd is killed goes Down once
its lease expires (the others stay Up) and comes back Up when it starts again."""
import json
import time
import unittest

from cluster_hosts import HOST_NAMES, LEASE_TTL, ClusterHosts, nodes, states, vmctl
from vmms_host import wait_for


class ClusterMembership(ClusterHosts, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hosts = {}
        try:
            for name in HOST_NAMES:
                cls.hosts[name] = cls.join(name)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for h in getattr(cls, "hosts", {}).values():
            h.close()
        super().tearDownClass()

    def wait_all_up(self, observer):
        wait_for(lambda: states(observer) == {n: "UP" for n in HOST_NAMES}, 60, interval=0.2,
                 what="all three hosts Up")

    def test_hosts_join_and_each_sees_all_three_up(self):
        for observer in self.hosts.values():
            self.wait_all_up(observer)
        # The figures arrive with the first renewals after hvd's first samples.
        wait_for(lambda: all(n.memory_pool_bytes > 0 and n.logical_processors == 2
                             for n in nodes(self.hosts["hosta"]).values()), 30, interval=0.2,
                 what="every record's hypervisor figures")
        for name, n in nodes(self.hosts["hostb"]).items():
            self.assertEqual(n.address, self.hosts[name].address)
            self.assertEqual(n.lease_ttl_seconds, LEASE_TTL)
            self.assertNotEqual(n.lease_id, 0)
            self.assertIn("bundled", list(n.engines))
            self.assertLessEqual(n.memory_free_bytes, n.memory_pool_bytes)
            self.assertTrue(n.compatibility_vector.startswith("unicorn/"), n.compatibility_vector)
        # The keys are where vmms-cluster.h says: a lease-bound alive key and a record per host.
        self.assertEqual(sorted(self.etcd.get_prefix("/vmms/alive/")), [f"/vmms/alive/{n}" for n in HOST_NAMES])
        self.assertEqual(sorted(self.etcd.get_prefix("/vmms/hosts/")), [f"/vmms/hosts/{n}" for n in HOST_NAMES])

    def test_get_cluster_node_prints_each_host_and_its_state(self):
        self.wait_all_up(self.hosts["hosta"])
        r = vmctl(self.hosts["hosta"], "Get-ClusterNode")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertRegex(lines[0], r"^Name\s+State\s+Address")
        for name in HOST_NAMES:
            row = next(line for line in lines if line.startswith(name + " "))
            self.assertIn(" Up ", row)
            self.assertIn(self.hosts[name].address, row)
        r = vmctl(self.hosts["hostc"], "Get-ClusterNode", "-Json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(n["name"] for n in json.loads(r.stdout)), list(HOST_NAMES))

    def test_second_vmmsd_with_a_live_hosts_name_does_not_take_its_place(self):
        self.wait_all_up(self.hosts["hosta"])
        lease_before = nodes(self.hosts["hosta"])["hostb"].lease_id
        impostor = self.join("hostb")
        try:
            wait_for(lambda: "another vmmsd holds the host name hostb" in impostor.log(), 30,
                     what="the impostor to say the name is taken")
            self.assertEqual(nodes(self.hosts["hosta"])["hostb"].lease_id, lease_before)
            self.assertEqual(nodes(self.hosts["hosta"])["hostb"].address, self.hosts["hostb"].address)
        finally:
            impostor.close()

    def test_killed_host_goes_down_after_its_lease_and_rejoins(self):
        a, c = self.hosts["hosta"], self.hosts["hostc"]
        self.wait_all_up(a)
        c.kill9()
        killed = time.monotonic()
        wait_for(lambda: states(a)["hostc"] == "DOWN", 60, interval=0.05, what="hostc Down")
        down_after = time.monotonic() - killed
        print(f"# hostc Down {down_after:.2f} s after kill -9 (lease TTL {LEASE_TTL} s)", flush=True)
        self.assertEqual(states(a), {"hosta": "UP", "hostb": "UP", "hostc": "DOWN"})
        self.assertEqual(states(self.hosts["hostb"])["hostc"], "DOWN")
        # Down keeps the record: the last renewal no longer moves.
        last = nodes(a)["hostc"].last_renewal_unix_ms
        time.sleep(LEASE_TTL)
        self.assertEqual(nodes(a)["hostc"].last_renewal_unix_ms, last)
        c.start()
        wait_for(lambda: states(a)["hostc"] == "UP", 60, interval=0.2, what="hostc Up again")
        self.assertGreater(nodes(a)["hostc"].last_renewal_unix_ms, last)


if __name__ == "__main__":
    unittest.main()
