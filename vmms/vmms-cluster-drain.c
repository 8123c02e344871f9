/* Suspend-ClusterNode -Drain on this host: each period, if no move is under way, the next
 * running VM goes to the Up, not Paused host with the most free memory (Move-VM's live
 * migration, the owner key handed over in its commit step). One move at a time: a drain
 * is maintenance, not a race. A VM that cannot move (another engine, no host with room)
 * is said once per drain and stays. */
#include <string.h>

#include "vmms-cluster-private.h"
#include "vmms-migration.h"

typedef struct DrainMove {
        VmmsCluster *c;
        char vm_id[37];
} DrainMove;

static void on_drain_target(const VmmsError *error, const char *address, void *userdata)
{
        g_autofree DrainMove *d = userdata;
        VmmsCluster *c = d->c;
        VmmsMigration *mig = vmms_manager_migration(c->m);
        VmmsVm *vm = vmms_manager_lookup(c->m, d->vm_id, NULL);
        g_autofree char *what = NULL;

        c->drain_choosing = false;
        if (!vm || vm->job || vm->def.state != VMMS_VM_RUNNING)
                return;
        if (error) {
                what = g_strdup_printf("drain: VM '%s' stays: %s", vm->def.name, error->message);
                g_warning("cluster: %s", what);
                vmms_vm_record_event(vm, "cluster-drain", what);
                return;
        }
        what = g_strdup_printf("drain: moving to %s", address);
        g_message("cluster: VM '%s' %s", vm->def.name, what);
        vmms_vm_record_event(vm, "cluster-drain", what);
        vmms_migration_move(mig, vm, address, 0, NULL);
}

void cluster_drain_step(VmmsCluster *c)
{
        GPtrArray *vms = vmms_manager_vms(c->m);
        VmmsMigration *mig = vmms_manager_migration(c->m);
        VmmsVm *next = NULL;
        DrainMove *d;

        if (c->drain_choosing)
                return;
        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (vm->job && strcmp(vm->job, "move") == 0)
                        return; /* one at a time */
                /* Only VMs Move-VM can move: it refuses other engines by name. */
                if (!next && !vm->job && vm->def.state == VMMS_VM_RUNNING &&
                    strcmp(vm->def.engine, "bundled") == 0)
                        next = vm;
        }
        if (!next || !mig) {
                if (!c->drain_said) {
                        g_autofree char *what = g_strdup_printf(
                                "drain: %s", next ? "this host cannot move VMs (no --tls-cert, "
                                                    "--tls-key, --tls-ca)"
                                                  : "no running VM is left to move");

                        g_message("cluster: %s", what);
                        vmms_manager_record_host_event(c->m, "cluster-drain", what);
                }
                c->drain_said = true;
                return;
        }
        c->drain_said = false;
        c->drain_choosing = true;
        d = g_new0(DrainMove, 1);
        d->c = c;
        g_strlcpy(d->vm_id, next->def.id, sizeof(d->vm_id));
        cluster_placement_choose(c, next, on_drain_target, d);
}
