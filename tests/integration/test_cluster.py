"""A cluster of three vmmsd hosts on three private etcd members (suite cluster).
Membership: each host joins with a lease and a record, every host sees all three Up with
their addresses and figures, vmctl Get-ClusterNode prints them, and a host whose vmmsd is
killed goes Down once its lease expires (the others stay Up) and comes back Up when it
starts again. Placement: a started VM's owner key names its host and Get-VM -Cluster
lists it there from any host; Move-VM by host name moves it (the guest's memsoak passes go
on, uncorrupted) and its owner key with it; a host that does not own a VM refuses to
start it, naming the owner, and leaves the owner's key alone. Leader and HA: one host
leads; when a host's vmmsd is stopped (kill -STOP), its hvd's watchdog pauses its guests,
its lease expires, and the leader restarts its highly available VM on another host; on
kill -CONT the stopped host finds its lease gone, fences itself (its copy turned off) and
its copy never printed a console line while the other ran. A kill -9 of etcd's raft leader
changes nothing visible: every host stays Up, nobody fences, the guest runs on. Drain:
Suspend-ClusterNode -Drain moves every running VM off a host (the guests go on), the host
shows Paused and takes no VMs by name, and Resume-ClusterNode makes it Up again. A host
back from a crash (vmmsd, hvd and workers killed) does not start on its own an HA VM the
leader restarted elsewhere meanwhile. A source vmmsd killed at the hand-over of a move (its
owner key given, COMMIT out) leaves one copy running, on the host the owner key names. Stale
owner keys (naming a host that does not have the VM, or a host that never joined) are
deleted, and a host that has the VM takes its key again. When etcd loses its quorum,
Get-ClusterNode names etcd and why, and each host turns its VMs off once it could not renew
its lease for TTL less the fence margin, saying why."""
import json
import os
import signal
import subprocess
import time
import unittest
import uuid

from cluster_hosts import (HOST_NAMES, LEASE_TTL, VMCTL, ClusterHosts, cluster_vms, nodes, owner_record, states,
                           vmctl)
from move_hosts import SOAK, passes, stopped, workers
from vmmsd_host import processes_naming
from vmms_host import wait_for

MiB = 1 << 20


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
            self.assertGreaterEqual(n.cpu_wait_per_dispatch_ns, 0)
            self.assertTrue(n.compatibility_vector.startswith("unicorn/"), n.compatibility_vector)
        # The keys are where vmms-cluster.h says: a lease-bound alive key and a record per host.
        self.assertEqual(sorted(self.etcd.get_prefix("/vmms/alive/")), [f"/vmms/alive/{n}" for n in HOST_NAMES])
        self.assertEqual(sorted(self.etcd.get_prefix("/vmms/hosts/")), [f"/vmms/hosts/{n}" for n in HOST_NAMES])

    def test_get_cluster_node_prints_each_host_and_its_state(self):
        self.wait_all_up(self.hosts["hosta"])
        r = vmctl(self.hosts["hosta"], "Get-ClusterNode")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertRegex(lines[0], r"^Name\s+State\s+Address.*\sCPU\(%\)\s+CPUWait\(us\)\s+Pressure\(%\)")
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

    def remove_everywhere(self, name, hosts):
        """Turns off and removes the VM called name on each host that has it."""
        for h in hosts:
            try:
                h.api.StopVm(h.pb.StopVmRequest(vm=name, turn_off=True), timeout=30)
            except Exception:
                pass
            try:
                h.api.RemoveVm(h.pb.VmRef(vm=name), timeout=30)
            except Exception:
                pass

    def restart(self, host, env=None):
        """kill -9 of host's vmmsd, started again with `env`; back once it holds a new lease (until then its
        hvd's watchdog, armed by the killed vmmsd, may still pause what starts there)."""
        lease = nodes(self.hosts["hostb" if host.name != "hostb" else "hosta"])[host.name].lease_id
        host.env = env
        host.kill9()
        host.start()
        wait_for(lambda: (lambda n: n.lease_id != lease and n.state == host.pb.CLUSTER_NODE_STATE_UP)(
            nodes(host)[host.name]), 60, interval=0.2, what=f"{host.name} to join with a new lease")

    def start_soak(self, host, name):
        vm = host.create(name, startup=64 * MiB, workload="memsoak", boot_args=SOAK)
        r = vmctl(host, "Start-VM", name)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: len(passes(host, vm.id)) >= 2, 60, what="two memsoak passes")
        return vm

    def test_started_vm_is_owned_by_its_host_and_listed_cluster_wide(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        vm = self.start_soak(a, "listed")
        try:
            self.assertEqual(owner_record(self.etcd, a, vm.id).host, "hosta")
            wait_for(lambda: cluster_vms(b).get("listed") and cluster_vms(b)["listed"].state == b.pb.VM_STATE_RUNNING,
                     30, interval=0.1, what="Get-VM -Cluster on hostb to show it Running")
            self.assertEqual(cluster_vms(b)["listed"].host, "hosta")
            r = vmctl(self.hosts["hostc"], "Get-VM", "-Cluster", "list*")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout.splitlines()[0], r"^Name\s+State\s+Host")
            self.assertRegex(r.stdout, r"(?m)^listed\s+Running\s+hosta\s")
        finally:
            a.api.StopVm(a.pb.StopVmRequest(vm="listed", turn_off=True), timeout=30)
            a.api.RemoveVm(a.pb.VmRef(vm="listed"), timeout=30)
        # A removed VM's key goes with it.
        wait_for(lambda: owner_record(self.etcd, a, vm.id) is None, 30, interval=0.1, what="the key to go")

    def test_move_vm_by_host_name_moves_the_vm_and_its_owner_key(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        vm = self.start_soak(a, "web")
        try:
            r = vmctl(a, "Move-VM", "web", "-DestinationHost", "nosuch")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("no host named 'nosuch' in the cluster", r.stderr)
            last = max(passes(a, vm.id))
            r = vmctl(a, "Move-VM", "web", "-DestinationHost", "hostb", timeout=180)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            b.wait_state("web", b.pb.VM_STATE_RUNNING, timeout=60)
            wait_for(lambda: any(p > last for p in passes(b, vm.id)), 60, what="the guest's next pass on hostb")
            self.assertNotIn("CORRUPTION", b.console(vm.id))
            self.assertEqual(len(workers(b, vm.id)), 1)
            self.assertNotIn("web", {v.name for v in a.api.ListVms(a.pb.ListVmsRequest(), timeout=5).vms})
            self.assertEqual(owner_record(self.etcd, a, vm.id).host, "hostb")
            wait_for(lambda: cluster_vms(self.hosts["hostc"])["web"].host == "hostb", 30, interval=0.1,
                     what="Get-VM -Cluster to show web on hostb")
        finally:
            for h in (a, b):
                try:
                    h.api.StopVm(h.pb.StopVmRequest(vm="web", turn_off=True), timeout=30)
                    h.api.RemoveVm(h.pb.VmRef(vm="web"), timeout=30)
                except Exception:
                    pass

    def test_start_on_a_host_that_does_not_own_the_vm_is_refused_by_name(self):
        a = self.hosts["hosta"]
        self.wait_all_up(a)
        vm = a.create("db")
        # As after a failover to a host that is Down now: hostz (a record, no lease) holds the key
        # of a VM hosta still has a definition of. Only hostz could say its key is stale.
        self.etcd.put("/vmms/hosts/hostz", a.pb.ClusterNode(name="hostz", address="127.0.0.1:9").SerializeToString())
        try:
            wait_for(lambda: owner_record(self.etcd, a, vm.id), 30, interval=0.1, what="db's owner key")
            cv = owner_record(self.etcd, a, vm.id)
            self.assertEqual(cv.host, "hosta")
            cv.host = "hostz"
            self.etcd.put(f"/vmms/vms/{vm.id}", cv.SerializeToString())
            r = vmctl(a, "Start-VM", "db")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("cannot start VM 'db' on hosta: it is owned by hostz in the cluster", r.stderr)
            self.assertEqual(a.api.GetVm(a.pb.VmRef(vm="db"), timeout=5).state, a.pb.VM_STATE_OFF)
            # hosta's next passes, and the leader's, leave another host's key alone.
            time.sleep(2 * LEASE_TTL)
            self.assertEqual(owner_record(self.etcd, a, vm.id).host, "hostz")
        finally:
            self.etcd.delete("/vmms/hosts/hostz")
            a.api.RemoveVm(a.pb.VmRef(vm="db"), timeout=30)
            self.etcd.delete(f"/vmms/vms/{vm.id}")

    def test_vm_names_are_unique_cluster_wide(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        vm = a.create("uniq")
        try:
            wait_for(lambda: owner_record(self.etcd, a, vm.id), 30, interval=0.1, what="uniq's owner key")
            # New-VM of a name another host owns, in any case, is refused naming the owner.
            r = vmctl(b, "New-VM", "-Name", "UNIQ", "-MemoryStartupBytes", "64MB")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("a VM named 'uniq' already exists in the cluster: hosta owns it", r.stderr)
            self.assertEqual([v.name for v in b.api.ListVms(b.pb.ListVmsRequest(), timeout=5).vms], [])
            # Rename-VM to it as well; the VM keeps its name.
            twin = b.create("twin")
            r = vmctl(b, "Rename-VM", "twin", "-NewName", "Uniq")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("a VM named 'uniq' already exists in the cluster: hosta owns it", r.stderr)
            self.assertEqual(b.api.GetVm(b.pb.VmRef(vm=twin.id), timeout=5).name, "twin")
            # Move-VM of a VM whose name another host's VM has (as a store restored from a backup
            # could leave it) is refused before anything moves.
            cv = b.pb.ClusterVm(host="hostc", vm=b.pb.Vm(id="00000000-0000-4000-8000-00000000beef", name="TWIN"))
            self.etcd.put("/vmms/vms/00000000-0000-4000-8000-00000000beef", cv.SerializeToString())
            r = vmctl(b, "Move-VM", "twin", "-DestinationHost", "hosta")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("a VM named 'TWIN' already exists in the cluster: hostc owns it", r.stderr)
            self.assertEqual(b.api.GetVm(b.pb.VmRef(vm="twin"), timeout=5).id, twin.id)
        finally:
            self.etcd.etcdctl("del", "/vmms/vms/00000000-0000-4000-8000-00000000beef")
            a.api.RemoveVm(a.pb.VmRef(vm="uniq"), timeout=30)
            try:
                b.api.RemoveVm(b.pb.VmRef(vm="twin"), timeout=30)
            except Exception:
                pass
        # Once removed, the name is free again anywhere.
        wait_for(lambda: owner_record(self.etcd, a, vm.id) is None, 30, interval=0.1, what="uniq's key to go")
        r = vmctl(b, "New-VM", "-Name", "uniq", "-MemoryStartupBytes", "64MB")
        self.assertEqual(r.returncode, 0, r.stderr)
        b.api.RemoveVm(b.pb.VmRef(vm="uniq"), timeout=30)

    def test_start_on_a_paused_host_is_refused(self):
        a, c = self.hosts["hosta"], self.hosts["hostc"]
        self.wait_all_up(a)
        c.create("held", startup=64 * MiB)
        try:
            r = vmctl(a, "Suspend-ClusterNode", "hostc")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = vmctl(c, "Start-VM", "held")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("cannot start VM 'held' on hostc: the host is Paused (Suspend-ClusterNode)", r.stderr)
            self.assertEqual(c.api.GetVm(c.pb.VmRef(vm="held"), timeout=5).state, c.pb.VM_STATE_OFF)
            self.assertEqual(vmctl(a, "Resume-ClusterNode", "hostc").returncode, 0)
            r = vmctl(c, "Start-VM", "held")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            vmctl(a, "Resume-ClusterNode", "hostc")
            c.api.StopVm(c.pb.StopVmRequest(vm="held", turn_off=True), timeout=30)
            c.api.RemoveVm(c.pb.VmRef(vm="held"), timeout=30)

    def test_set_cluster_is_stored_once_for_every_host_and_bad_values_are_refused(self):
        a, b, c = (self.hosts[n] for n in HOST_NAMES)
        self.wait_all_up(a)
        # The leader stores its own defaults (no --cluster-auto-balance: off).
        wait_for(lambda: self.etcd.get("/vmms/settings") is not None, 30, interval=0.2, what="stored settings")
        r = vmctl(c, "Get-Cluster")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^AutoBalance\s+AutoBalanceThreshold\(%\)\s+AutoBalanceCpuWait\(us\)")
        self.assertRegex(r.stdout, r"(?m)^False\s+100\s+1000\s")
        try:
            r = vmctl(b, "Set-Cluster", "-AutoBalance", "$true", "-AutoBalanceThreshold", "400")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"(?m)^True\s+400\s+1000\s+hostb\s")
            got = json.loads(vmctl(c, "Get-Cluster", "-Json").stdout)
            self.assertEqual((got["autoBalance"], got["autoBalanceThreshold"], got["updatedBy"]), (True, 400, "hostb"))
            stored = a.pb.ClusterSettings()
            stored.ParseFromString(self.etcd.get("/vmms/settings"))
            self.assertEqual((stored.auto_balance, stored.auto_balance_threshold), (True, 400))
            # Bad values: vmctl's own range check, then the daemon's for any client.
            r = vmctl(a, "Set-Cluster", "-AutoBalanceThreshold", "0")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("AutoBalanceThreshold", r.stderr)
            for req, name in ((a.pb.SetClusterRequest(auto_balance_threshold=5000,
                                                      update_mask=["auto_balance_threshold"]), "AutoBalanceThreshold 5000"),
                              (a.pb.SetClusterRequest(update_mask=["threshold"]), "no setting 'threshold'")):
                with self.assertRaises(Exception) as raised:
                    a.api.SetCluster(req, timeout=10)
                self.assertEqual(raised.exception.code().name, "INVALID_ARGUMENT")
                self.assertIn(name, raised.exception.details())
            stored.ParseFromString(self.etcd.get("/vmms/settings"))
            self.assertEqual(stored.auto_balance_threshold, 400, "nothing half-written")
        finally:
            vmctl(a, "Set-Cluster", "-AutoBalance", "$false", "-AutoBalanceThreshold", "100")

    def test_one_host_leads(self):
        a = self.hosts["hosta"]
        self.wait_all_up(a)
        wait_for(lambda: sum(n.leader for n in nodes(a).values()) == 1, 30, interval=0.1, what="one leader")
        leaders = [name for name, n in nodes(self.hosts["hostb"]).items() if n.leader]
        self.assertEqual(len(leaders), 1)
        r = vmctl(a, "Get-ClusterNode")
        self.assertRegex(r.stdout, rf"(?m)^{leaders[0]}\s.*\syes$")

    def test_ha_vm_restarts_elsewhere_when_its_host_stops_and_never_runs_twice(self):
        a = self.hosts["hosta"]
        self.wait_all_up(a)
        wait_for(lambda: sum(n.leader for n in nodes(a).values()) == 1, 30, interval=0.1, what="a leader")
        # The victim is a host that does not lead, so the leader's own clock is not the one stopped.
        victim_name = next(name for name, n in sorted(nodes(a).items()) if not n.leader and name != "hosta")
        victim = self.hosts[victim_name]
        vm = victim.create("ha", startup=64 * MiB, workload="memsoak", boot_args=SOAK)
        r = vmctl(victim, "Set-VM", "ha", "-HighlyAvailable", "$true")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(victim.api.GetVm(victim.pb.VmRef(vm="ha"), timeout=5).highly_available)
        r = vmctl(victim, "Start-VM", "ha")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: len(passes(victim, vm.id)) >= 2, 60, what="two memsoak passes")
        wait_for(lambda: (lambda v: v and v.highly_available and v.state == a.pb.VM_STATE_RUNNING)(
            cluster_vms(a).get("ha")), 30, interval=0.1, what="the key to say HA and Running")
        os.kill(victim.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_for(lambda: states(a)[victim_name] == "DOWN", 60, interval=0.05, what=f"{victim_name} Down")
            down_after = time.monotonic() - stopped
            frozen = victim.console(vm.id)  # paused by hvd's watchdog before the lease ran out
            wait_for(lambda: (lambda v: v and v.host != victim_name)(cluster_vms(a).get("ha")), 60, interval=0.05,
                     what="the leader to give ha to another host")
            new = self.hosts[cluster_vms(a)["ha"].host]
            wait_for(lambda: {v.name: v.state for v in new.api.ListVms(new.pb.ListVmsRequest(), timeout=5).vms}
                     .get("ha") == new.pb.VM_STATE_RUNNING, 60, interval=0.05, what="ha Running on the new host")
            running_after = time.monotonic() - stopped
            wait_for(lambda: len(passes(new, vm.id)) >= 2, 60, what="memsoak passes on the new host")
            first_pass_after = time.monotonic() - stopped
            print(f"# {victim_name} stopped: Down after {down_after:.2f} s, ha Running on {new.name} after "
                  f"{running_after:.2f} s, its second pass there after {first_pass_after:.2f} s "
                  f"(lease TTL {LEASE_TTL} s)", flush=True)
            self.assertEqual(victim.console(vm.id), frozen, "the stopped host's copy ran while the other did")
        finally:
            os.kill(victim.proc.pid, signal.SIGCONT)
        wait_for(lambda: "self-fence" in victim.log(), 30, what="the stopped host to fence itself")
        victim.wait_state("ha", victim.pb.VM_STATE_OFF, timeout=60)
        self.assertIn("lost its cluster lease", victim.log())
        self.assertEqual(victim.console(vm.id), frozen, "the fenced copy ran again")
        self.assertNotIn("CORRUPTION", new.console(vm.id))
        self.assertEqual(owner_record(self.etcd, a, vm.id).host, new.name)
        self.assertEqual(len(workers(new, vm.id)), 1)
        self.assertEqual(workers(victim, vm.id), [])
        # The fenced host comes back, and a Start-VM there is refused: the VM is the new host's.
        wait_for(lambda: states(a)[victim_name] == "UP", 60, interval=0.2, what=f"{victim_name} Up again")
        r = vmctl(victim, "Start-VM", "ha")
        self.assertIn(f"it is owned by {new.name}", r.stderr)
        for h in (victim, new):
            try:
                h.api.StopVm(h.pb.StopVmRequest(vm="ha", turn_off=True), timeout=30)
            except Exception:
                pass
            h.api.RemoveVm(h.pb.VmRef(vm="ha"), timeout=30)

    def test_etcd_leader_killed_changes_nothing_visible(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        vm = self.start_soak(b, "steady")
        fenced_before = [h.log().count("self-fence") for h in self.hosts.values()]
        raft_leader = wait_for(self.etcd.leader, 30, interval=0.2, what="etcd's raft leader")
        self.etcd.kill9(raft_leader)
        try:
            seen = set()
            deadline = time.monotonic() + 4 * LEASE_TTL
            while time.monotonic() < deadline:
                try:
                    seen.update(states(a).values())
                except Exception:
                    pass  # a listing during the election may time out; what it would show is the point
                time.sleep(0.1)
            self.assertEqual(seen, {"UP"})
            self.assertEqual(states(self.hosts["hostc"]), {n: "UP" for n in HOST_NAMES})
            self.assertEqual([h.log().count("self-fence") for h in self.hosts.values()], fenced_before)
            last = max(passes(b, vm.id))
            wait_for(lambda: max(passes(b, vm.id)) > last, 30, what="the guest's next pass")
            self.assertEqual(b.api.GetVm(b.pb.VmRef(vm="steady"), timeout=5).state, b.pb.VM_STATE_RUNNING)
        finally:
            self.etcd.start(raft_leader)
            wait_for(self.etcd.healthy, 60, interval=0.2, what="etcd healthy again")
            try:
                b.api.StopVm(b.pb.StopVmRequest(vm="steady", turn_off=True), timeout=30)
            except Exception:
                pass
            b.api.RemoveVm(b.pb.VmRef(vm="steady"), timeout=30)

    def test_drain_moves_every_vm_off_a_host_and_resume_takes_vms_again(self):
        a, c = self.hosts["hosta"], self.hosts["hostc"]
        self.wait_all_up(a)
        vms = [self.start_soak(c, name) for name in ("d1", "d2")]
        try:
            r = vmctl(a, "Suspend-ClusterNode", "hostc", "-Drain", timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertRegex(r.stdout, r"(?m)^hostc\s+Paused\s")
            listed = cluster_vms(a)
            for vm in vms:
                self.assertNotEqual(listed[vm.name].host, "hostc")
                new = self.hosts[listed[vm.name].host]
                new.wait_state(vm.name, new.pb.VM_STATE_RUNNING, timeout=60)
                last = max(passes(new, vm.id) or [0])
                wait_for(lambda: max(passes(new, vm.id) or [0]) > last, 60, what=f"{vm.name}'s next pass")
                self.assertNotIn("CORRUPTION", new.console(vm.id))
            self.assertEqual([v.name for v in c.api.ListVms(c.pb.ListVmsRequest(), timeout=5).vms], [])
            self.assertEqual(states(a)["hostc"], "PAUSED")
            r = vmctl(a, "Move-VM", "d1" if listed["d1"].host == "hosta" else "d2", "-DestinationHost", "hostc")
            self.assertIn("host hostc is Paused", r.stderr)
            r = vmctl(self.hosts["hostb"], "Resume-ClusterNode", "hostc")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"(?m)^hostc\s+Up\s")
        finally:
            vmctl(a, "Resume-ClusterNode", "hostc")
            for vm in vms:
                for h in self.hosts.values():
                    try:
                        h.api.StopVm(h.pb.StopVmRequest(vm=vm.name, turn_off=True), timeout=30)
                    except Exception:
                        pass
                    try:
                        h.api.RemoveVm(h.pb.VmRef(vm=vm.name), timeout=30)
                    except Exception:
                        pass

    def test_host_back_from_a_crash_does_not_start_what_runs_elsewhere(self):
        a = self.hosts["hosta"]
        self.wait_all_up(a)
        wait_for(lambda: sum(n.leader for n in nodes(a).values()) == 1, 30, interval=0.1, what="a leader")
        victim_name = next(name for name, n in sorted(nodes(a).items()) if not n.leader and name != "hosta")
        victim = self.hosts[victim_name]
        vm = victim.create("crash", startup=64 * MiB, workload="memsoak", boot_args=SOAK)
        self.assertEqual(vmctl(victim, "Set-VM", "crash", "-HighlyAvailable", "$true").returncode, 0)
        self.assertEqual(vmctl(victim, "Start-VM", "crash").returncode, 0)
        wait_for(lambda: len(passes(victim, vm.id)) >= 2, 60, what="two memsoak passes")
        wait_for(lambda: (lambda v: v and v.highly_available and v.state == a.pb.VM_STATE_RUNNING)(
            cluster_vms(a).get("crash")), 30, interval=0.1, what="the key to say HA and Running")
        # The whole host goes: vmmsd, hvd and the worker.
        for pid in [victim.proc.pid] + processes_naming(str(victim.dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        victim.proc.wait()
        wait_for(lambda: (lambda v: v and v.host != victim_name)(cluster_vms(a).get("crash")), 60, interval=0.1,
                 what="the leader to give crash to another host")
        new = self.hosts[cluster_vms(a)["crash"].host]
        wait_for(lambda: len(passes(new, vm.id)) >= 1, 60, what="crash running on the new host")
        victim.start()
        wait_for(lambda: "not started on its own" in victim.log(), 60, what="the returning host to hold back")
        self.assertIn(f"owned by {new.name}", victim.log())
        self.assertEqual(victim.api.GetVm(victim.pb.VmRef(vm="crash"), timeout=5).state, victim.pb.VM_STATE_OFF)
        self.assertEqual(workers(victim, vm.id), [])
        wait_for(lambda: states(a)[victim_name] == "UP", 60, interval=0.2, what=f"{victim_name} Up again")
        for h in (victim, new):
            try:
                h.api.StopVm(h.pb.StopVmRequest(vm="crash", turn_off=True), timeout=30)
            except Exception:
                pass
            h.api.RemoveVm(h.pb.VmRef(vm="crash"), timeout=30)

    def test_move_cut_short_at_the_hand_over_leaves_one_copy_where_the_owner_key_says(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        # hosta stops itself once its owner key is handed to hostb and COMMIT is out, and is killed there.
        self.restart(a, {"VMMS_MIGRATION_STOP_AT": "commit-sent"})
        vm = self.start_soak(a, "handoff")
        move = subprocess.Popen([str(VMCTL), "Move-VM", "handoff", "-DestinationHost", "hostb"],
                                env=dict(os.environ, VMMS_SOCKET=str(a.socket)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: stopped(a.proc.pid), 120, interval=0.05, what="hosta at commit-sent")
            self.assertEqual(owner_record(self.etcd, b, vm.id).host, "hostb")
            a.kill9()
            move.communicate(timeout=60)
            a.env = None
            a.start()  # joins once its old lease expired; its hvd's watchdog fired meanwhile
            # The key says hostb: the copy there runs on; hosta's is turned off, never resumed.
            b.wait_state("handoff", b.pb.VM_STATE_RUNNING, timeout=60)
            last = max(passes(b, vm.id) or [0])
            wait_for(lambda: max(passes(b, vm.id) or [0]) > last, 60, what="the guest's next pass on hostb")
            wait_for(lambda: a.api.GetVm(a.pb.VmRef(vm="handoff"), timeout=5).state == a.pb.VM_STATE_OFF, 60,
                     interval=0.2, what="hosta's copy Off")
            wait_for(lambda: workers(a, vm.id) == [], 30, interval=0.2, what="hosta's worker gone")
            self.wait_all_up(a)
            frozen = a.console(vm.id)
            time.sleep(LEASE_TTL)  # passes of every host: nothing starts hosta's copy again
            self.assertEqual(len(workers(b, vm.id)), 1)
            self.assertEqual(workers(a, vm.id), [])
            self.assertEqual(a.console(vm.id), frozen)
            self.assertEqual(owner_record(self.etcd, a, vm.id).host, "hostb")
            self.assertEqual(cluster_vms(self.hosts["hostc"])["handoff"].host, "hostb")
            self.assertNotIn("CORRUPTION", b.console(vm.id))
            r = vmctl(a, "Start-VM", "handoff")
            self.assertIn("it is owned by hostb", r.stderr)
        finally:
            if move.poll() is None:
                move.kill()
                move.communicate()
            if a.env:
                self.restart(a)
            self.remove_everywhere("handoff", (a, b))

    def test_move_whose_destination_dies_at_the_hand_over_stays_with_the_source(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        # hostb stops itself once READY is out; hosta then hands the key over and sends COMMIT, and
        # hostb is killed before it reads it: hosta's copy is in doubt, the key names hostb.
        self.restart(b, {"VMMS_MIGRATION_STOP_AT": "ready-sent"})
        vm = self.start_soak(a, "handback")
        try:
            move = subprocess.Popen([str(VMCTL), "Move-VM", "handback", "-DestinationHost", "hostb"],
                                    env=dict(os.environ, VMMS_SOCKET=str(a.socket)), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            wait_for(lambda: stopped(b.proc.pid), 120, interval=0.05, what="hostb at ready-sent")
            wait_for(lambda: (lambda k: k and k.host == "hostb")(owner_record(self.etcd, a, vm.id)), 30,
                     interval=0.05, what="the key handed to hostb")
            b.kill9()
            _, err = move.communicate(timeout=60)
            self.assertIn("outcome", err)
            # The key is the hand-over's (hostb never wrote it): hosta keeps its copy, Paused.
            time.sleep(LEASE_TTL / 2)
            self.assertEqual(a.api.GetVm(a.pb.VmRef(vm="handback"), timeout=5).state, a.pb.VM_STATE_PAUSED)
            self.assertEqual(len(workers(a, vm.id)), 1)
            b.env = None
            b.start()  # discards the move it never committed, and with it the key it was handed
            wait_for(lambda: (lambda k: k and k.host == "hosta")(owner_record(self.etcd, a, vm.id)), 60,
                     interval=0.2, what="the key back with hosta")
            self.assertEqual(a.api.GetVm(a.pb.VmRef(vm="handback"), timeout=5).state, a.pb.VM_STATE_PAUSED)
            r = vmctl(a, "Resume-VM", "handback")
            self.assertEqual(r.returncode, 0, r.stderr)
            last = max(passes(a, vm.id))
            wait_for(lambda: max(passes(a, vm.id)) > last, 60, what="the guest's next pass on hosta")
            self.assertNotIn("CORRUPTION", a.console(vm.id))
            self.assertEqual(len(workers(a, vm.id)), 1)
            self.assertEqual(workers(b, vm.id), [])
            self.assertNotIn("handback", {v.name for v in b.api.ListVms(b.pb.ListVmsRequest(), timeout=5).vms})
            self.assertEqual(owner_record(self.etcd, a, vm.id).host, "hosta")
        finally:
            if b.env:
                self.restart(b)
            self.wait_all_up(a)
            self.remove_everywhere("handback", (a, b))

    def ghost_key(self, host, owner, name):
        """An owner key naming `owner` for a VM nobody has; its id."""
        vm_id = str(uuid.uuid4())
        cv = host.pb.ClusterVm(host=owner, vm=host.pb.Vm(id=vm_id, name=name, state=host.pb.VM_STATE_OFF))
        self.etcd.put(f"/vmms/vms/{vm_id}", cv.SerializeToString())
        return vm_id

    def reconcile_events(self, host, name):
        return [e.message for e in host.api.ListEvents(host.pb.ListEventsRequest(limit=10000), timeout=10).events
                if e.kind == "cluster-reconcile" and f"'{name}'" in e.message]

    def test_stale_owner_keys_are_deleted_and_retaken_by_the_host_that_has_the_vm(self):
        a, b, c = self.hosts["hosta"], self.hosts["hostb"], self.hosts["hostc"]
        self.wait_all_up(a)
        # hostc's store loses a VM while its vmmsd is down (replaced, or the VM removed while etcd
        # was unreachable): its key still names hostc when it starts again.
        c.kill9()
        ghost = self.ghost_key(a, "hostc", "ghost")
        c.start()
        wait_for(lambda: owner_record(self.etcd, a, ghost) is None, 60, interval=0.2, what="hostc to drop ghost's key")
        self.assertEqual(len(self.reconcile_events(c, "ghost")), 1)
        self.assertIn("which this host does not have", self.reconcile_events(c, "ghost")[0])
        # A key naming a host that never joined: the leader's sweep.
        orphan = self.ghost_key(a, "nosuchhost", "orphan")
        wait_for(lambda: owner_record(self.etcd, a, orphan) is None, 60, interval=0.2, what="the leader to drop it")
        leader = next(self.hosts[n] for n, node in nodes(a).items() if node.leader)
        self.assertIn("no host of that name ever joined", self.reconcile_events(leader, "orphan")[0])
        # hosta has db2; its key wrongly names hostb, which has no such VM: hostb drops it, hosta takes it.
        vm = a.create("db2")
        try:
            wait_for(lambda: owner_record(self.etcd, a, vm.id), 30, interval=0.1, what="db2's owner key")
            cv = owner_record(self.etcd, a, vm.id)
            cv.host = "hostb"
            self.etcd.put(f"/vmms/vms/{vm.id}", cv.SerializeToString())
            wait_for(lambda: (lambda k: k and k.host == "hosta")(owner_record(self.etcd, a, vm.id)), 60, interval=0.2,
                     what="hosta to own db2 again")
            self.assertEqual(len(self.reconcile_events(b, "db2")), 1)
            self.assertEqual(vmctl(a, "Start-VM", "db2").returncode, 0)
            self.assertEqual(owner_record(self.etcd, a, vm.id).host, "hosta")
        finally:
            try:
                a.api.StopVm(a.pb.StopVmRequest(vm="db2", turn_off=True), timeout=30)
            except Exception:
                pass
            a.api.RemoveVm(a.pb.VmRef(vm="db2"), timeout=30)

    def test_etcd_quorum_lost_names_etcd_and_hosts_fence_after_the_margin(self):
        a, b = self.hosts["hosta"], self.hosts["hostb"]
        self.wait_all_up(a)
        vm = self.start_soak(b, "quorum")
        members = list(self.etcd.names[:2])
        for m in members:
            self.etcd.kill9(m)
        try:
            r = wait_for(lambda: (lambda r: r if r.returncode != 0 else None)(vmctl(a, "Get-ClusterNode")), 30,
                         interval=0.2, what="Get-ClusterNode to fail")
            self.assertIn("etcd", r.stderr)
            self.assertIn("majority of its members", r.stderr)
            wait_for(lambda: "could not renew its cluster lease" in b.log(), 60, interval=0.2,
                     what="hostb to fence itself")
            b.wait_state("quorum", b.pb.VM_STATE_OFF, timeout=30)
            fenced = [e.message for e in b.api.ListEvents(b.pb.ListEventsRequest(limit=10000), timeout=10).events
                      if e.kind == "cluster-fenced" and not e.vm_id]
            self.assertTrue(any("could not renew its cluster lease" in m and "etcd" in m for m in fenced), fenced)
            self.assertEqual(workers(b, vm.id), [])
        finally:
            for m in members:
                self.etcd.start(m)
            wait_for(self.etcd.healthy, 60, interval=0.2, what="etcd healthy again")
        self.wait_all_up(a)
        self.assertEqual(vmctl(a, "Get-ClusterNode").returncode, 0)
        b.api.RemoveVm(b.pb.VmRef(vm="quorum"), timeout=30)


if __name__ == "__main__":
    unittest.main()
