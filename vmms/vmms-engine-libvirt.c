/* The libvirt engine: the VM is a libvirt domain, run by QEMU (KVM or TCG) under the
 * libvirtd that --libvirt-uri names. vmmsd keeps its own policy (Dynamic Memory,
 * Reserve/Maximum/RelativeWeight) and carries it out through the libvirt C API.
 *
 * What maps to what:
 *   VM definition        -> a transient domain, its XML generated here at each start
 *                           (vmmsd's store owns the definition; libvirt holds the domain
 *                           only while it runs, so Remove-VM leaves nothing behind and a
 *                           changed setting needs no second copy kept in step). UUID =
 *                           the VM's id, name "vmms-<name>-<id prefix>".
 *   Start-VM             -> virDomainCreateXML, in a thread (QEMU takes a moment)
 *   Stop-VM              -> the ACPI power button (virDomainShutdownFlags), then
 *                           virDomainDestroy (in a thread) after the stop timeout
 *   -TurnOff, kill       -> virDomainDestroy
 *   Suspend/Resume-VM    -> virDomainSuspend/virDomainResume
 *   the VM is gone       -> libvirt's lifecycle event STOPPED (its detail names why:
 *                           the guest shut down, was destroyed, crashed — a pvpanic
 *                           device and <on_crash>destroy — or QEMU failed) -> exited()
 *   vmmsd restarted      -> attach() finds the running domain by UUID
 *   console              -> a serial port written to STATE/logs/<id>.console.log
 *   VHDPath, drives      -> virtio disks: the boot disk vda, Add-VMHardDiskDrive's images
 *                           vdb, vdc, ... in the order added, each image's format probed
 *                           again at each start (vmms-devices.c: qcow2 without a backing
 *                           file, or raw), so a file that changed is refused by name
 *   network adapters     -> <interface type='network'> on the libvirt network named by
 *                           SwitchName, virtio, with the MAC fixed when it was added;
 *                           Add-VMNetworkAdapter asks libvirtd whether the network exists
 *                           (network_valid). Devices change only while the VM is Off: the
 *                           XML is written at each start, nothing is hot-plugged.
 *   CPU: RelativeWeight  -> the domain cgroup's cpu_shares (cgroup v2 writes it 1:1 to
 *                           cpu.weight, the same 1-10000 range and default 100)
 *        Maximum         -> vcpu_quota = Maximum x 1000 us per vcpu_period of 100 ms
 *        Reserve         -> cgroups have no CPU minimum, so a reservation is met with
 *                           weights: under full contention a domain gets w / SUM(w) of
 *                           the host. A VM reserving s = Reserve x Count / (100 x LPs)
 *                           of the host needs w >= s x SUM(w). Water-filling: start from
 *                           the RelativeWeights; VMs whose weight falls short are pinned
 *                           at w = s x T, where T = W_free / (1 - S_pinned) (W_free: the
 *                           unpinned VMs' weights, S_pinned: the pinned VMs' shares);
 *                           repeat until no VM falls short (at most once per VM). The
 *                           weights depend only on settings and on which VMs run, so
 *                           they are recomputed when those change (a start, an exit, a
 *                           Set-VMProcessor), not every tick. Start-VM refuses a VM whose
 *                           reservation would take the libvirt VMs' sum past the host's
 *                           LPs. Limits: the guarantee holds among libvirt VMs (their
 *                           cgroups are siblings under machine.slice), not against hvd or
 *                           other host processes; weights are capped at 10000.
 *                           Measured (bench/libvirt_reserve.py, three busy 1-vCPU guests
 *                           on 2 LPs of a machine at load ~11): cpu.shares 500/400/100 for
 *                           Reserve 100/80/0 gave 49/43/8 % of the guests' CPU time for a
 *                           50/40/10 % target, but 200/100/100 gave 37/30/33 % for 50/25/
 *                           25 % (CFS weighs a group per CPU: a lone vCPU on one CPU
 *                           cannot use its weight on the other), and the guests together
 *                           got only 20-34 % of the host, so no Reserve was met in
 *                           absolute terms. Weights divide what the libvirt VMs get; they
 *                           cannot take CPU from processes outside machine.slice.
 *   Dynamic Memory       -> virtio-balloon with stats every second. <memory> is the
 *                           VM's Maximum (its startup size when Dynamic Memory is off) and
 *                           <currentMemory> its startup size: the balloon moves between
 *                           them (virDomainSetMemoryFlags, live) within [Minimum,
 *                           Maximum]. Where Dynamic Memory's Maximum exceeds Startup,
 *                           the memory above startup is hot-added instead: the domain
 *                           boots with Startup (one guest NUMA cell, <maxMemory>) and a
 *                           virtio-mem device of Maximum - Startup with nothing plugged,
 *                           and a kernel booted by the engine gets
 *                           memhp_default_state=online_movable (no udev in a minimal
 *                           guest to online it) and swiotlb=noforce (below). Adds deflate
 *                           the balloon first, then raise virtio-mem's requested size in
 *                           2 MiB blocks (virDomainUpdateDeviceFlags); removes go through
 *                           the balloon (prompt; an unplug can fall short), which keeps
 *                           the boot memory at least half of Minimum, then shrink the
 *                           requested size. libvirt's <current> (what the guest plugged)
 *                           is read from the live XML each second. The balloon's actual
 *                           covers the boot memory only: assigned = actual + plugged.
 *                           Committed = what the guest holds (the balloon's actual size
 *                           plus virtio-mem's plugged size) - usable (MemAvailable):
 *                           MemAvailable counts page cache the guest can drop, so
 *                           committed is what it cannot give back, the figure Hyper-V's
 *                           guests report. (actual - unused would count cache as demand
 *                           and starve the balancer.) Not available - usable (MemTotal -
 *                           MemAvailable): that leaves out what the kernel reserved at
 *                           boot, which no balloon can take. Measured: a 256 MiB guest
 *                           with a virtio-mem region reserved 126 MiB (the region above
 *                           4 GiB makes it set up a 64 MiB swiotlb); with MemTotal -
 *                           MemAvailable the balancer saw 55 % pressure while the guest
 *                           ran out of memory. The reserve (held - MemTotal) is learned
 *                           only while the balloon is still: held is live, the stats up to
 *                           a second old (vmms-virtio-balloon.c). Assigned = the balloon's
 *                           size (actual), or the target vmmsd asked for while a deflate
 *                           is under way; an inflate not yet done is pending removal.
 *                           Resident = QEMU's rss, measured by libvirt.
 *   sample()             -> CPU % from the domain's cpu time over the last second, of
 *                           all the host's LPs; memory as above.
 *   counters             -> Hyper-V's sets for the counter walk (vmms-counters.c), in hvd's
 *                           partition shape, from one virConnectGetAllDomainStats call a
 *                           second: each VP's run time = vcpu.N.time (QEMU does not split
 *                           guest from emulation time), its CPU wait = vcpu.N.delay (the
 *                           vCPU thread's run-queue delay, schedstat's second field),
 *                           dispatches = the thread's timeslices (schedstat's third field,
 *                           read from /proc for QEMU's "CPU N/..." thread, 0 where vmmsd
 *                           cannot see it); Physical Memory = assigned as above; Host
 *                           Resident Bytes = libvirt's rss of QEMU. So Get-Counter,
 *                           Get-VMHostHealth and the Prometheus metrics cover these VMs.
 *
 * The pool: one balancer spans both engines. A libvirt VM's assigned memory is charged
 * to the same pool figure as the bundled VMs' (hvd's pool, --hvd-memory): the manager
 * adds it to hvd's used figure before each plan, so the pool is "the memory vmms may
 * give out" whichever engine holds it.
 *
 * The connection: libvirt's GLib event loop implementation (virEventRegisterDefaultImpl)
 * runs on vmmsd's default main context, so lifecycle events and keepalives arrive there.
 * Calls that wait for libvirtd run off the main thread: creating, destroying, saving and
 * migrating a domain each in a thread of their own, every other call (stats, setmem,
 * schedinfo, suspend, the power button, reconnecting) in order on the engine's worker
 * thread ("Calls on the worker thread" below); a libvirtd that stops answering is
 * reported as not responding while vmmsd answers on. If libvirtd goes away (close
 * callback, keepalive 5 s x 3), the engine is unavailable with that reason and reconnects
 * every 2 s; on reconnect each VM's domain is looked up again and one that is gone is
 * reported.
 *
 *   Save-VM              -> virDomainSaveFlags to STATE/saved/<id>.vmrs (libvirt's save
 *                           image: the domain XML and QEMU's migration stream) through a
 *                           temporary name, fsync'd and renamed into place; Start-VM of a
 *                           Saved VM -> virDomainRestoreFlags. Checkpoint-VM is refused
 *                           by name (libvirt saves a domain only by ending it)
 *   Move-VM              -> libvirt's peer-to-peer live migration to the destination's
 *                           libvirtd (see "Move-VM" below); vmmsd moves the definition
 *
 * Not done yet: Checkpoint-VM (refused by name), hot-plugging disks and NICs, a Maximum
 * raised while the VM runs (the virtio-mem device is sized at start). */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmms-devices.h"
#include "vmms-engine.h"
#include "vmms-virtio-balloon.h"

#define RECONNECT_INTERVAL_S 2
#define STATS_INTERVAL_MS 1000
#define VCPU_PERIOD_US 100000
#define WEIGHT_MAX 10000
#define VMEM_BLOCK_KIB 2048 /* virtio-mem's block: x86's 2 MiB huge page, the least it allows */

typedef struct Libvirt {
        VmmsEngine base;
        VmmsLibvirtConfig config;
        virConnectPtr conn;
        int lifecycle_callback;  /* -1: none */
        char *why_not;           /* NULL while connected */
        const char *domain_type; /* "kvm" or "qemu" once connected */
        guint reconnect_timer;
        guint stats_timer;
        GHashTable *vms; /* lower-case UUID -> LibvirtVm* */
        /* Lower-case UUIDs of VMs whose incoming move this host gave up: their domain must
         * not run here, whenever libvirt brings it (refuse_domain). */
        GHashTable *refused;
        uint32_t host_lps;
        /* The calls that can block, on one worker thread (see "Calls on the worker thread"). */
        GThreadPool *worker;
        gint refs;  /* atomic: the engine, each call in flight, the connection's close callback */
        bool freed; /* vmms_engine_libvirt_free() ran: calls that finish only free themselves */
        bool connecting, collecting; /* a (re)connection, a stats round in flight */
        unsigned calls_waiting;      /* queued or running */
        unsigned calls_done, calls_done_at_tick;
        unsigned stalled_ticks; /* stats ticks in a row with calls waiting and none finished */
} Libvirt;

/* The engine's state for one VM while it runs. */
typedef struct LibvirtVm {
        Libvirt *engine;
        VmmsVm *vm; /* NULL once released while a thread still runs */
        char uuid[37];
        virDomainPtr dom;
        unsigned pending; /* create/destroy threads running */
        bool started;     /* running() was reported */
        bool crashed;
        char *failure; /* why the engine ended it itself */
        guint stop_timer;
        uint64_t target_kib; /* the balloon target vmmsd last set; 0: none */
        /* virtio-mem (hot-add beyond startup): its size, the size vmmsd asked the guest to
         * plug, and what it has plugged (libvirt's <current>); size 0: no device. */
        uint64_t vmem_size_kib, vmem_requested_kib, vmem_current_kib;
        bool vmem_checked;     /* the domain was looked at for a virtio-mem device */
        bool memory_call;      /* a balloon or virtio-mem change is on the worker thread */
        unsigned arrival_asks; /* stats rounds left to ask libvirt's account of a move that
                                  arrived (its completed job's statistics come a moment later) */
        uint64_t actual_kib, rss_kib;
        VmmsVirtioBalloon balloon; /* its committed memory from the balloon's stats */
        uint64_t cpu_time_ns;
        int64_t cpu_at_us;
        double cpu_pct;
        uint32_t weight; /* cpu_shares applied; 0: none yet */
        int32_t pid;     /* QEMU's, 0 if not visible */
        /* The counter walk's last two samples (older first) and when they were taken. */
        Vmms__Hv__PartitionCounters *counters[2];
        int64_t counters_at_us[2];
        /* Move-VM: the destination waits for the domain to arrive (incoming); the source
         * runs libvirt's migration in a thread (migrating) until it moved (migrated) or
         * failed; migrate_end(false) while it runs aborts it and waits in end_done. */
        bool incoming, migrating, migrated, aborting, polling;
        guint migration_timer;
        gint abort_now; /* atomic: read by the migration thread */
        /* Save-VM: the file it goes to and who is told; the domain's end is ours to report. */
        bool saving;
        char *save_path;
        VmmsEngineSavedFn save_done;
        VmmsEngineMigration progress;
        VmmsEngineDoneFn end_done;
} LibvirtVm;

static Libvirt *libvirt(VmmsEngine *e)
{
        return (Libvirt *)e;
}

static const char *last_error(void)
{
        const char *message = virGetLastErrorMessage();

        return message && *message ? message : "unknown libvirt error";
}

static void clear_timer(guint *timer)
{
        if (*timer)
                g_source_remove(*timer);
        *timer = 0;
}

/* A copy of the tracked VMs: reporting an exit removes one from the table. */
static GPtrArray *tracked_vms(Libvirt *e)
{
        GPtrArray *vms = g_ptr_array_new();
        GHashTableIter it;
        gpointer key, value;

        g_hash_table_iter_init(&it, e->vms);
        while (g_hash_table_iter_next(&it, &key, &value))
                g_ptr_array_add(vms, value);
        return vms;
}

static void counters_free(Vmms__Hv__PartitionCounters *pc)
{
        if (!pc)
                return;
        for (size_t i = 0; i < pc->n_vps; i++)
                g_free(pc->vps[i]);
        g_free(pc->vps);
        g_free(pc);
}

static void lv_free(LibvirtVm *lv)
{
        clear_timer(&lv->stop_timer);
        clear_timer(&lv->migration_timer);
        counters_free(lv->counters[0]);
        counters_free(lv->counters[1]);
        if (lv->dom)
                virDomainFree(lv->dom);
        g_free(lv->failure);
        g_free(lv->save_path);
        g_free(lv);
}

/* Forgets the VM; a thread still running for it frees the state when it ends. */
static void release(VmmsEngine *e, VmmsVm *vm)
{
        LibvirtVm *lv = vm->engine_data;

        if (!lv)
                return;
        g_hash_table_remove(libvirt(e)->vms, lv->uuid);
        vm->engine_data = NULL;
        lv->vm = NULL;
        lv->end_done = NULL;
        clear_timer(&lv->stop_timer);
        clear_timer(&lv->migration_timer);
        if (!lv->pending)
                lv_free(lv);
}

static LibvirtVm *vm_data(Libvirt *e, VmmsVm *vm)
{
        LibvirtVm *lv = vm->engine_data;

        if (lv)
                return lv;
        lv = g_new0(LibvirtVm, 1);
        lv->engine = e;
        lv->vm = vm;
        for (size_t i = 0; i < sizeof(lv->uuid) - 1 && vm->def.id[i]; i++)
                lv->uuid[i] = g_ascii_tolower(vm->def.id[i]);
        g_hash_table_insert(e->vms, lv->uuid, vm);
        g_hash_table_remove(e->refused, lv->uuid); /* this host's again */
        vm->engine_data = lv;
        return lv;
}

static void recompute_weights(Libvirt *e, VmmsVm *changed, const VmmsProcessorSettings *p);

/* libvirt holds a domain's job while it saves or migrates it: a call that changes the
 * domain (setmem, schedinfo, a device update), and even a query that needs the monitor
 * (memory stats), would wait on vmmsd's main thread until that ends (measured: 8 s), so
 * none is made then; the migration's progress is asked in a thread. */
static bool busy(const LibvirtVm *lv)
{
        return lv->saving || lv->migrating;
}

static void report_exit(VmmsVm *vm, const char *how, const char *guest_reason, VmmsErrorCode start_error)
{
        LibvirtVm *lv = vm->engine_data;
        g_autofree char *failure = lv ? g_steal_pointer(&lv->failure) : NULL;
        VmmsEngineExit exit = {
                .how = how,
                .last_words = failure,
                .guest_reason = guest_reason,
                .guest_crashed = lv && lv->crashed,
                .start_error = start_error,
        };
        Libvirt *e = libvirt(vm->engine);

        release(vm->engine, vm);
        recompute_weights(e, NULL, NULL);
        vm->engine->callbacks->exited(vm, &exit);
}

/* ---- The domain ---- */

static bool is_qcow2(const char *path)
{
        char magic[4] = {0};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        bool qcow2;

        if (fd < 0)
                return false;
        qcow2 = read(fd, magic, sizeof(magic)) == sizeof(magic) && memcmp(magic, "QFI\xfb", 4) == 0;
        close(fd);
        return qcow2;
}

static char *domain_name(const VmmsVm *vm)
{
        g_autofree char *partition = vmms_vm_partition_name(vm);

        return g_strconcat("vmms-", partition, NULL);
}

/* Dynamic Memory beyond startup is hot-added: a virtio-mem device of Maximum - Startup. */
static uint64_t hotplug_kib(const VmmsVmDefinition *def)
{
        const VmmsMemorySettings *m = &def->memory;

        return m->dynamic_memory_enabled && m->maximum_bytes > m->startup_bytes
                       ? ((m->maximum_bytes - m->startup_bytes) >> 10) / VMEM_BLOCK_KIB * VMEM_BLOCK_KIB
                       : 0;
}

static uint64_t maximum_kib(const VmmsVmDefinition *def)
{
        return (def->memory.dynamic_memory_enabled ? def->memory.maximum_bytes : def->memory.startup_bytes) >>
               10;
}

/* A virtio disk vd<letter>: the boot disk is vda, added drives follow in order. */
static void append_disk(GString *xml, const char *path, const char *format, char letter)
{
        g_autofree char *disk =
                g_markup_printf_escaped("    <disk type='file' device='disk'><driver name='qemu' type='%s'/>"
                                        "<source file='%s'/><target dev='vd%c' bus='virtio'/></disk>\n",
                                        format, path, letter);

        g_string_append(xml, disk);
}

/* formats: each added drive's format, probed again at this start. */
static char *domain_xml(Libvirt *e, VmmsVm *vm, uint32_t weight, GPtrArray *formats)
{
        char disk_letter = 'a';
        uint64_t vmem_kib = hotplug_kib(&vm->def);
        uint64_t boot_kib = vmem_kib ? vm->def.memory.startup_bytes >> 10 : maximum_kib(&vm->def);
        const VmmsVmDefinition *def = &vm->def;
        g_autofree char *name = domain_name(vm);
        g_autofree char *console_name = g_strconcat(def->id, ".console.log", NULL);
        g_autofree char *console = g_build_filename(e->config.state_dir, "logs", console_name, NULL);
        GString *xml = g_string_new(NULL);
        g_autofree char *head = g_markup_printf_escaped("<domain type='%s'>\n"
                                                        "  <name>%s</name>\n"
                                                        "  <uuid>%s</uuid>\n"
                                                        "  <title>vmms VM %s</title>\n",
                                                        e->domain_type, name, def->id, def->name);

        g_string_append(xml, head);
        if (vmem_kib)
                g_string_append_printf(
                        xml, "  <maxMemory slots='1' unit='KiB'>%" G_GUINT64_FORMAT "</maxMemory>\n",
                        boot_kib + vmem_kib);
        g_string_append_printf(xml,
                               "  <memory unit='KiB'>%" G_GUINT64_FORMAT "</memory>\n"
                               "  <currentMemory unit='KiB'>%" G_GUINT64_FORMAT "</currentMemory>\n"
                               "  <vcpu>%u</vcpu>\n"
                               "  <cputune>\n    <shares>%u</shares>\n",
                               boot_kib + vmem_kib, def->memory.startup_bytes >> 10, def->processor.count,
                               weight);
        if (def->processor.maximum < 100)
                g_string_append_printf(xml, "    <period>%u</period>\n    <quota>%u</quota>\n",
                                       VCPU_PERIOD_US, def->processor.maximum * (VCPU_PERIOD_US / 100));
        g_string_append(xml, "  </cputune>\n");
        if (vmem_kib) /* virtio-mem needs a guest NUMA node to plug into */
                g_string_append_printf(xml,
                                       "  <cpu><numa><cell id='0' cpus='0-%u' memory='%" G_GUINT64_FORMAT
                                       "' unit='KiB'/></numa></cpu>\n",
                                       def->processor.count - 1, boot_kib);
        g_string_append(xml, "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n");
        if (def->kernel_path && *def->kernel_path) {
                const char *given = def->kernel_args ? def->kernel_args : "";
                /* Hot-added memory is onlined movable, so the guest can give it back. A
                 * hotplug region above 4 GiB makes the kernel reserve a 64 MiB swiotlb
                 * bounce buffer (measured: 126 of 256 MiB reserved); the domain's devices
                 * are virtio, which do not bounce, so it is turned off. */
                g_autofree char *args = g_strconcat(
                        strstr(given, "console=") ? "" : "console=ttyS0 ",
                        vmem_kib && !strstr(given, "memhp_default_state=")
                                ? "memhp_default_state=online_movable "
                                : "",
                        vmem_kib && !strstr(given, "swiotlb=") ? "swiotlb=noforce " : "", given, NULL);
                g_autofree char *boot =
                        g_markup_printf_escaped("    <kernel>%s</kernel>\n", def->kernel_path);

                g_string_append(xml, boot);
                if (def->initrd_path && *def->initrd_path) {
                        g_autofree char *initrd =
                                g_markup_printf_escaped("    <initrd>%s</initrd>\n", def->initrd_path);

                        g_string_append(xml, initrd);
                }
                g_autofree char *cmdline = g_markup_printf_escaped("    <cmdline>%s</cmdline>\n", args);
                g_string_append(xml, cmdline);
        } else {
                g_string_append(xml, "    <boot dev='hd'/>\n");
        }
        g_string_append(xml, "  </os>\n  <features><acpi/><apic/></features>\n"
                             "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n"
                             "  <on_crash>destroy</on_crash>\n  <devices>\n");
        if (def->vhd_path && *def->vhd_path)
                append_disk(xml, def->vhd_path, is_qcow2(def->vhd_path) ? "qcow2" : "raw", disk_letter++);
        for (guint i = 0; i < formats->len; i++)
                append_disk(xml, g_array_index(def->hard_disk_drives, VmmsHardDiskDrive, i).path,
                            formats->pdata[i], disk_letter++);
        for (guint i = 0; i < def->network_adapters->len; i++) {
                const VmmsNetworkAdapter *a = &g_array_index(def->network_adapters, VmmsNetworkAdapter, i);
                g_autofree char *nic = g_markup_printf_escaped(
                        "    <interface type='network'><source network='%s'/><mac address='%s'/>"
                        "<model type='virtio'/></interface>\n",
                        a->switch_name, a->mac_address);

                g_string_append(xml, nic);
        }
        if (vmem_kib)
                g_string_append_printf(
                        xml,
                        "    <memory model='virtio-mem'><target><size unit='KiB'>%" G_GUINT64_FORMAT
                        "</size><node>0</node><block unit='KiB'>%u</block>"
                        "<requested unit='KiB'>0</requested></target></memory>\n",
                        vmem_kib, VMEM_BLOCK_KIB);
        g_autofree char *serial = g_markup_printf_escaped(
                "    <serial type='file'><source path='%s' append='on'/><target port='0'/></serial>\n",
                console);
        g_string_append(xml, serial);
        g_string_append(xml, "    <memballoon model='virtio'><stats period='1'/></memballoon>\n"
                             "    <panic model='isa'/>\n  </devices>\n</domain>\n");
        return g_string_free(xml, FALSE);
}

/* QEMU's pid for the domain (its command line has "-uuid <uuid>"); 0 if libvirtd runs
 * it where vmmsd cannot see it. */
static int32_t qemu_pid(const char *uuid)
{
        g_autoptr(GDir) dir = g_dir_open("/proc", 0, NULL);
        const char *entry;

        while (dir && (entry = g_dir_read_name(dir))) {
                g_autofree char *path = NULL;
                g_autofree char *cmdline = NULL;
                gsize len;

                if (!g_ascii_isdigit(entry[0]))
                        continue;
                path = g_build_filename("/proc", entry, "cmdline", NULL);
                if (!g_file_get_contents(path, &cmdline, &len, NULL))
                        continue;
                /* Arguments are NUL-separated; QEMU's include "-uuid", "<uuid>". */
                for (gsize i = 0; i + 6 < len; i += strlen(cmdline + i) + 1)
                        if (strcmp(cmdline + i, "-uuid") == 0 &&
                            g_ascii_strcasecmp(cmdline + i + 6, uuid) == 0)
                                return (int32_t)g_ascii_strtoll(entry, NULL, 10);
        }
        return 0;
}

static void report_running(VmmsVm *vm, bool paused, int64_t started_unix_ms)
{
        LibvirtVm *lv = vm->engine_data;
        VmmsEngineRunning info = {
                .paused = paused,
                .pid = qemu_pid(lv->uuid),
                .started_unix_ms = started_unix_ms,
        };

        lv->started = true;
        lv->pid = info.pid;
        vm->engine->callbacks->running(vm, &info);
}

/* ---- Blocking calls, in a thread ---- */

typedef enum BlockingOp { OP_CREATE, OP_DESTROY, OP_SAVE, OP_RESTORE } BlockingOp;

typedef struct Blocking {
        BlockingOp op;
        LibvirtVm *lv;
        virConnectPtr conn;
        virDomainPtr dom; /* OP_DESTROY, OP_SAVE: in; OP_CREATE, OP_RESTORE: out */
        char *xml;
        char *path; /* OP_SAVE: the file written (a temporary name); OP_RESTORE: read */
        char *error;
} Blocking;

static void blocking_free(Blocking *b)
{
        if (b->dom)
                virDomainFree(b->dom);
        if (b->conn)
                virConnectClose(b->conn);
        g_free(b->xml);
        g_free(b->path);
        g_free(b->error);
        g_free(b);
}

static void blocking_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
        Blocking *b = data;

        (void)source;
        (void)cancellable;
        switch (b->op) {
        case OP_CREATE:
                b->dom = virDomainCreateXML(b->conn, b->xml, 0);
                if (!b->dom)
                        b->error = g_strdup(last_error());
                break;
        case OP_DESTROY:
                if (virDomainDestroy(b->dom) < 0)
                        b->error = g_strdup(last_error());
                break;
        case OP_SAVE:
                if (virDomainSaveFlags(b->dom, b->path, NULL, VIR_DOMAIN_SAVE_RUNNING) < 0)
                        b->error = g_strdup(last_error());
                break;
        case OP_RESTORE:
                if (virDomainRestoreFlags(b->conn, b->path, NULL, VIR_DOMAIN_SAVE_RUNNING) < 0 ||
                    !(b->dom = virDomainLookupByUUIDString(b->conn, b->lv->uuid)))
                        b->error = g_strdup(last_error());
                break;
        }
        g_task_return_boolean(task, TRUE);
}

static void on_created(LibvirtVm *lv, Blocking *b)
{
        VmmsVm *vm = lv->vm;

        if (!vm) /* released (vmmsd is stopping): the domain runs on for the next vmmsd */
                return;
        if (b->error) {
                g_autofree char *why =
                        b->op == OP_RESTORE
                                ? g_strdup_printf("libvirt could not restore the domain from %s: %s", b->path,
                                                  b->error)
                                : g_strdup_printf("libvirt could not create the domain: %s", b->error);

                report_exit(vm, why, NULL, VMMS_ERROR_FAILED_PRECONDITION);
                return;
        }
        lv->dom = g_steal_pointer(&b->dom);
        if (!lv->started)
                report_running(vm, false, g_get_real_time() / 1000);
}

/* fsync(2) of a file or directory; 0 or a negative errno. */
static int sync_path(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        int r = fd >= 0 && fsync(fd) == 0 ? 0 : -errno;

        if (fd >= 0)
                close(fd);
        return r;
}

/* Save-VM: libvirt wrote the state to a temporary name and ended the domain (or failed,
 * and the domain runs on). The file goes into place whole, then the VM's end is
 * reported; a save that failed leaves no file and any earlier one untouched. */
static void on_saved(LibvirtVm *lv, Blocking *b)
{
        VmmsVm *vm = lv->vm;
        VmmsEngineSavedFn done = g_steal_pointer(&lv->save_done);
        g_autofree char *path = g_steal_pointer(&lv->save_path);
        g_autofree char *dir = path ? g_path_get_dirname(path) : NULL;
        g_autofree char *why = NULL;
        VmmsError error = {0};
        struct stat st;
        int r = 0;

        lv->saving = false;
        if (!b->error && ((r = sync_path(b->path)) < 0 || rename(b->path, path) < 0 ||
                          (r = sync_path(dir)) < 0 || stat(path, &st) < 0))
                why = g_strdup_printf("cannot keep the saved state as %s: %s", path,
                                      g_strerror(r < 0 ? -r : errno));
        if (b->error)
                (void)unlink(b->path);
        if (!vm)
                return;
        if (b->error) {
                vmms_error_set(&error, VMMS_ERROR_FAILED_PRECONDITION, "cannot save VM '%s': libvirt: %s",
                               vm->def.name, b->error);
                done(vm, &error, 0);
                vmms_error_clear(&error);
                if (virDomainIsActive(lv->dom) == 0) /* it did not run on after all */
                        report_exit(vm, "its domain ended while libvirt saved it", NULL, VMMS_OK);
                return;
        }
        if (why) {
                vmms_error_set(&error, VMMS_ERROR_INTERNAL, "cannot save VM '%s': %s", vm->def.name, why);
                done(vm, &error, 0);
                vmms_error_clear(&error);
                report_exit(vm, why, NULL, VMMS_OK);
                return;
        }
        done(vm, NULL, (uint64_t)st.st_size);
        report_exit(vm, "the domain was saved", NULL, VMMS_OK);
}

static void on_blocking_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Blocking *b = g_task_get_task_data(G_TASK(result));
        LibvirtVm *lv = b->lv;

        (void)source;
        (void)userdata;
        lv->pending--;
        if (b->op == OP_CREATE || b->op == OP_RESTORE)
                on_created(lv, b);
        else if (b->op == OP_SAVE)
                on_saved(lv, b);
        else if (b->error && lv->vm)
                g_warning("VM '%s': libvirt could not destroy its domain: %s", lv->vm->def.name, b->error);
        if (!lv->vm && !lv->pending)
                lv_free(lv);
}

static void run_blocking(LibvirtVm *lv, BlockingOp op, char *xml)
{
        Blocking *b = g_new0(Blocking, 1);
        g_autoptr(GTask) task = g_task_new(NULL, NULL, on_blocking_done, NULL);

        b->op = op;
        b->lv = lv;
        b->xml = xml;
        b->conn = lv->engine->conn;
        virConnectRef(b->conn);
        if (op == OP_DESTROY || op == OP_SAVE) {
                b->dom = lv->dom;
                virDomainRef(b->dom);
        }
        if (op == OP_SAVE)
                b->path = g_strconcat(lv->save_path, ".partial", NULL);
        if (op == OP_RESTORE)
                b->path = g_strdup(lv->vm->restore_path);
        lv->pending++;
        g_task_set_task_data(task, b, (GDestroyNotify)blocking_free);
        g_task_run_in_thread(task, blocking_thread);
}

/* ---- Calls on the worker thread ----
 * Every other libvirt call that waits for libvirtd (and through it, often, for QEMU's
 * monitor: memory stats, setmem, schedinfo, suspend, the power button, a device update,
 * a reconnection) runs on the engine's one worker thread, in the order asked, and its
 * outcome comes back to the main context: a libvirtd that stops answering (stopped,
 * swapping, a QEMU monitor that hangs) leaves vmmsd's main loop, and with it the APIs,
 * answering. A call's work touches only the Call; its done runs on the main thread,
 * unless the engine was freed meanwhile. A VM's state is held (pending) until its calls
 * are done.
 *
 * Not responding: each stats tick (once a second) in which calls were waiting and none
 * finished counts; at STALL_TICKS in a row the engine is not responding — available()
 * says so (Start-VM is refused), each VM's Get-VM Status says so and gets an event —
 * until a call finishes again. libvirt's keepalive (5 s x 3) closes a connection whose
 * libvirtd is silent, and reconnecting waits on this thread too, so a stopped libvirtd
 * stays "not responding" until it answers; then the VMs are found again.
 * Left on the main thread: the first connection and attach() at vmmsd start-up, Move-VM's
 * migratable XML and network_valid() (both refused or skipped while not responding), and
 * whether a domain whose save failed still runs (libvirtd has just answered the save). */

#define STALL_TICKS 5
#define ARRIVAL_ASKS 10

typedef struct Call Call;
typedef void (*CallFn)(Call *c);

struct Call {
        Libvirt *e;         /* a reference */
        LibvirtVm *lv;      /* NULL: about the connection; else held (pending) until done */
        virConnectPtr conn; /* a reference, or NULL */
        virDomainPtr dom;   /* a reference, or NULL */
        CallFn work;        /* worker thread: reads and writes only the Call */
        CallFn done;        /* main thread */
        int r;              /* work's outcome: 0, or < 0 with error */
        char *error;        /* libvirt's message */
        /* What a call asks and answers (each call uses its own). */
        uint32_t weight;
        VmmsProcessorSettings processor;
        bool with_quota, paused, set_balloon, set_vmem, found;
        uint64_t balloon_kib, vmem_requested_kib;
        VmmsEngineDoneFn reply; /* the op's done, if any */
        void *data;
        GDestroyNotify free_data;
};

static void lv_free(LibvirtVm *lv);
static void recompute_weights(Libvirt *e, VmmsVm *changed, const VmmsProcessorSettings *p);

static Libvirt *engine_ref(Libvirt *e)
{
        g_atomic_int_inc(&e->refs);
        return e;
}

static void engine_destroy(Libvirt *e);

/* Any thread (the connection's close callback is freed where libvirt frees it). */
static void engine_unref(gpointer userdata)
{
        Libvirt *e = userdata;

        if (g_atomic_int_dec_and_test(&e->refs))
                engine_destroy(e);
}

static bool stalled(const Libvirt *e)
{
        return e->stalled_ticks >= STALL_TICKS;
}

static char *not_responding(const Libvirt *e)
{
        return g_strdup_printf("libvirtd at %s is not responding: a call has waited %u s", e->config.uri,
                               e->stalled_ticks);
}

static GPtrArray *tracked_vms(Libvirt *e);

/* Each tracked VM's event when the engine stops or starts answering. */
static void record_engine_event(Libvirt *e, const char *message)
{
        g_autoptr(GPtrArray) vms = tracked_vms(e);

        for (guint i = 0; i < vms->len; i++)
                vmms_vm_record_event(vms->pdata[i], "engine", message);
}

/* Once a stats tick (main thread). */
static void check_stall(Libvirt *e)
{
        if (e->calls_waiting && e->calls_done == e->calls_done_at_tick && ++e->stalled_ticks == STALL_TICKS) {
                g_autofree char *why = not_responding(e);

                g_warning("libvirt: %s", why);
                record_engine_event(e, why);
        }
        e->calls_done_at_tick = e->calls_done;
}

static Call *call_new(Libvirt *e, LibvirtVm *lv, CallFn work, CallFn done)
{
        Call *c = g_new0(Call, 1);

        c->e = engine_ref(e);
        c->lv = lv;
        c->work = work;
        c->done = done;
        if (e->conn) {
                c->conn = e->conn;
                virConnectRef(c->conn);
        }
        if (lv) {
                lv->pending++;
                if (lv->dom) {
                        c->dom = lv->dom;
                        virDomainRef(c->dom);
                }
        }
        return c;
}

static void call_free(Call *c)
{
        if (c->free_data && c->data)
                c->free_data(c->data);
        if (c->dom)
                virDomainFree(c->dom);
        if (c->conn)
                virConnectClose(c->conn);
        g_free(c->error);
        g_free(c);
}

static void call_failed(Call *c)
{
        c->r = -EIO;
        g_free(c->error);
        c->error = g_strdup(last_error());
}

/* A call answered unless its connection died under it (libvirt's keepalive closed the
 * connection to a silent libvirtd): that one does not end a stall. A reconnection that
 * failed was answered (refused). */
static gboolean call_finished(gpointer userdata)
{
        Call *c = userdata;
        Libvirt *e = c->e;
        LibvirtVm *lv = c->lv;
        bool answered = !c->conn || virConnectIsAlive(c->conn) == 1;

        e->calls_waiting--;
        if (answered)
                e->calls_done++;
        if (!e->freed) {
                if (answered && stalled(e)) {
                        g_autofree char *message =
                                g_strdup_printf("libvirtd at %s answers again", e->config.uri);

                        g_message("libvirt: %s", message);
                        record_engine_event(e, message);
                }
                if (answered)
                        e->stalled_ticks = 0;
                c->done(c);
        }
        if (lv && !--lv->pending && !lv->vm)
                lv_free(lv);
        call_free(c);
        engine_unref(e);
        return G_SOURCE_REMOVE;
}

static void worker_run(gpointer data, gpointer userdata)
{
        Call *c = data;

        (void)userdata;
        if (c->lv && !c->dom) {
                c->r = -ENOENT;
                c->error = g_strdup("its domain is not reachable");
        } else {
                c->work(c);
        }
        g_idle_add(call_finished, c);
}

static void call_submit(Call *c)
{
        c->e->calls_waiting++;
        g_thread_pool_push(c->e->worker, c, NULL);
}

/* A call about the connection as a whole, with its own data (freed with the call). */
static void call_submit_engine(Libvirt *e, CallFn work, CallFn done, void *data, GDestroyNotify free_data)
{
        Call *c = call_new(e, NULL, work, done);

        c->data = data;
        c->free_data = free_data;
        call_submit(c);
}

/* ---- Policy: CPU ---- */

typedef struct Share {
        LibvirtVm *lv;
        double reserve; /* fraction of the host */
        double weight;
        bool pinned;
} Share;

static void processor_of(VmmsVm *vm, VmmsVm *changed, const VmmsProcessorSettings *p,
                         VmmsProcessorSettings *ret)
{
        *ret = vm == changed && p ? *p : vm->def.processor;
}

/* The water-filling rule in the essay: each running VM's cpu_shares. */
static void compute_weights(Libvirt *e, GArray *shares)
{
        for (guint round = 0; round <= shares->len; round++) {
                double free_weight = 0, pinned_share = 0, total;
                bool changed = false;

                for (guint i = 0; i < shares->len; i++) {
                        Share *s = &g_array_index(shares, Share, i);

                        if (s->pinned)
                                pinned_share += s->reserve;
                        else
                                free_weight += s->weight;
                }
                if (pinned_share >= 1)
                        break; /* admission control keeps this from happening */
                total = free_weight / (1 - pinned_share);
                for (guint i = 0; i < shares->len; i++) {
                        Share *s = &g_array_index(shares, Share, i);

                        if (!s->pinned && s->reserve > 0 && s->weight < s->reserve * total) {
                                s->pinned = true;
                                changed = true;
                        }
                }
                if (!changed) {
                        for (guint i = 0; i < shares->len; i++) {
                                Share *s = &g_array_index(shares, Share, i);

                                if (s->pinned)
                                        s->weight = s->reserve * total + 0.5;
                        }
                        break;
                }
        }
        (void)e;
}

static GArray *running_shares(Libvirt *e, VmmsVm *changed, const VmmsProcessorSettings *p)
{
        GArray *shares = g_array_new(FALSE, TRUE, sizeof(Share));
        GHashTableIter it;
        gpointer key, value;

        g_hash_table_iter_init(&it, e->vms);
        while (g_hash_table_iter_next(&it, &key, &value)) {
                VmmsVm *vm = value;
                VmmsProcessorSettings ps;
                Share s = {.lv = vm->engine_data};

                processor_of(vm, changed, p, &ps);
                s.reserve = (double)ps.reserve * ps.count / (100.0 * e->host_lps);
                s.weight = ps.relative_weight;
                g_array_append_val(shares, s);
        }
        compute_weights(e, shares);
        return shares;
}

static uint32_t clamp_weight(double w)
{
        return (uint32_t)CLAMP(w, 2, WEIGHT_MAX);
}

static void scheduler_work(Call *c)
{
        virTypedParameterPtr params = NULL;
        int n = 0, cap = 0;

        virTypedParamsAddULLong(&params, &n, &cap, VIR_DOMAIN_SCHEDULER_CPU_SHARES, c->weight);
        if (c->with_quota) {
                virTypedParamsAddULLong(&params, &n, &cap, VIR_DOMAIN_SCHEDULER_VCPU_PERIOD, VCPU_PERIOD_US);
                virTypedParamsAddLLong(&params, &n, &cap, VIR_DOMAIN_SCHEDULER_VCPU_QUOTA,
                                       c->processor.maximum >= 100
                                               ? -1
                                               : (long long)c->processor.maximum * (VCPU_PERIOD_US / 100));
        }
        if (virDomainSetSchedulerParametersFlags(c->dom, params, n, VIR_DOMAIN_AFFECT_LIVE) < 0)
                call_failed(c);
        virTypedParamsFree(params, n);
}

/* A weight refused is forgotten, so the next recomputation asks again. */
static void weight_done(Call *c)
{
        LibvirtVm *lv = c->lv;

        if (c->r >= 0 || !lv->vm)
                return;
        g_warning("VM '%s': cannot set its CPU weight to %u: %s", lv->vm->def.name, c->weight, c->error);
        if (lv->weight == c->weight)
                lv->weight = 0;
}

/* Applies the recomputed weights to every running VM whose weight changed (`changed`
 * with settings `p` is left to the caller, which sets its quota too). The weight asked
 * counts as applied from the moment it is asked. */
static void recompute_weights(Libvirt *e, VmmsVm *changed, const VmmsProcessorSettings *p)
{
        g_autoptr(GArray) shares = NULL;

        if (!e->conn)
                return;
        shares = running_shares(e, changed, p);
        for (guint i = 0; i < shares->len; i++) {
                Share *s = &g_array_index(shares, Share, i);
                uint32_t w = clamp_weight(s->weight);
                Call *c;

                if (!s->lv->dom || s->lv->vm == changed || s->lv->weight == w || busy(s->lv))
                        continue;
                c = call_new(e, s->lv, scheduler_work, weight_done);
                c->weight = s->lv->weight = w;
                call_submit(c);
        }
}

static uint32_t weight_for(Libvirt *e, VmmsVm *vm, const VmmsProcessorSettings *p)
{
        g_autoptr(GArray) shares = running_shares(e, vm, p);

        for (guint i = 0; i < shares->len; i++)
                if (g_array_index(shares, Share, i).lv == vm->engine_data)
                        return clamp_weight(g_array_index(shares, Share, i).weight);
        return clamp_weight(p->relative_weight);
}

/* ---- The connection ---- */

static void on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque);
static void refuse_domain(Libvirt *e, const char *uuid);
static void on_close(virConnectPtr conn, int reason, void *opaque);
static gboolean on_reconnect(gpointer userdata);

static const char *close_reason(int reason)
{
        switch (reason) {
        case VIR_CONNECT_CLOSE_REASON_ERROR:
                return "a connection error";
        case VIR_CONNECT_CLOSE_REASON_EOF:
                return "libvirtd closed it";
        case VIR_CONNECT_CLOSE_REASON_KEEPALIVE:
                return "libvirtd stopped answering keepalives";
        default:
                return "the client closed it";
        }
}

static void disconnect(Libvirt *e, const char *why)
{
        if (!e->conn)
                return;
        if (e->lifecycle_callback >= 0)
                virConnectDomainEventDeregisterAny(e->conn, e->lifecycle_callback);
        e->lifecycle_callback = -1;
        virConnectUnregisterCloseCallback(e->conn, on_close);
        virConnectClose(e->conn);
        e->conn = NULL;
        g_free(e->why_not);
        e->why_not = g_strdup(why);
        if (!e->reconnect_timer)
                e->reconnect_timer = g_timeout_add_seconds(RECONNECT_INTERVAL_S, on_reconnect, e);
}

typedef struct CloseNote {
        Libvirt *e; /* a reference */
        virConnectPtr conn;
        int reason;
} CloseNote;

static gboolean on_close_idle(gpointer userdata)
{
        CloseNote *note = userdata;
        Libvirt *e = note->e;

        /* Only about the connection in use (a note can outlive a reconnection). */
        if (!e->freed && e->conn == note->conn) {
                g_autofree char *why =
                        g_strdup_printf("libvirtd at %s is not reachable: the connection closed (%s)",
                                        e->config.uri, close_reason(note->reason));

                g_warning("libvirt: the connection to %s closed: %s", e->config.uri,
                          close_reason(note->reason));
                disconnect(e, why);
        }
        engine_unref(e);
        g_free(note);
        return G_SOURCE_REMOVE;
}

/* Any thread (libvirt calls it where it saw the connection close, the worker's too):
 * the main thread handles it, outside libvirt's callback, which holds the connection's
 * lock. The connection holds a reference on the engine, so it is alive here. */
static void on_close(virConnectPtr conn, int reason, void *opaque)
{
        CloseNote *note = g_new0(CloseNote, 1);

        note->e = engine_ref(opaque);
        note->conn = conn;
        note->reason = reason;
        g_idle_add(on_close_idle, note);
}

/* A connection, set up: keepalive, the close callback, lifecycle events, and which
 * virtualization the domains ask for ("kvm" where libvirt offers it, unless the
 * configuration says otherwise, else "qemu": TCG). Either thread: it reads only the
 * engine's configuration. NULL with *ret_error when libvirtd cannot be reached. */
static virConnectPtr open_connection(Libvirt *e, int *ret_callback, const char **ret_type, char **ret_error)
{
        virConnectPtr conn = virConnectOpen(e->config.uri);
        g_autofree char *caps = NULL;

        if (!conn) {
                *ret_error =
                        g_strdup_printf("libvirtd at %s is not reachable: %s", e->config.uri, last_error());
                return NULL;
        }
        if (virConnectSetKeepAlive(conn, 5, 3) < 0)
                g_warning("libvirt: no keepalive on %s: %s", e->config.uri, last_error());
        virConnectRegisterCloseCallback(conn, on_close, engine_ref(e), engine_unref);
        *ret_callback = virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                         VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), e, NULL);
        if (*ret_callback < 0)
                g_warning("libvirt: no lifecycle events from %s: %s", e->config.uri, last_error());
        if (g_strcmp0(e->config.domain_type, "kvm") == 0 || g_strcmp0(e->config.domain_type, "qemu") == 0) {
                *ret_type = g_strcmp0(e->config.domain_type, "kvm") == 0 ? "kvm" : "qemu";
        } else {
                caps = virConnectGetCapabilities(conn);
                *ret_type = caps && strstr(caps, "<domain type='kvm'") ? "kvm" : "qemu";
        }
        return conn;
}

static void connected(Libvirt *e, virConnectPtr conn, int callback, const char *type)
{
        e->conn = conn;
        e->lifecycle_callback = callback;
        e->domain_type = type;
        g_clear_pointer(&e->why_not, g_free);
        g_message("libvirt: connected to %s (domains of type '%s')", e->config.uri, e->domain_type);
}

/* vmmsd's start-up: the first connection, on the main thread (attach() follows). */
static int connect_now(Libvirt *e)
{
        int callback = -1;
        const char *type = NULL;
        char *error = NULL;
        virConnectPtr conn = open_connection(e, &callback, &type, &error);

        if (!conn) {
                g_free(e->why_not);
                e->why_not = error;
                return -ECONNREFUSED;
        }
        connected(e, conn, callback, type);
        return 0;
}

/* A reconnection on the worker thread: the connection, then each tracked VM's domain
 * looked up again. */
typedef struct Refound {
        char uuid[37];
        virDomainPtr dom; /* NULL: gone */
        int state;
} Refound;

typedef struct Reconnect {
        GArray *vms; /* Refound; uuid filled in when asked */
        virConnectPtr conn;
        int callback;
        const char *type;
} Reconnect;

static void reconnect_free(gpointer userdata)
{
        Reconnect *k = userdata;

        for (guint i = 0; i < k->vms->len; i++)
                if (g_array_index(k->vms, Refound, i).dom)
                        virDomainFree(g_array_index(k->vms, Refound, i).dom);
        g_array_unref(k->vms);
        if (k->conn) {
                if (k->callback >= 0)
                        virConnectDomainEventDeregisterAny(k->conn, k->callback);
                virConnectUnregisterCloseCallback(k->conn, on_close);
                virConnectClose(k->conn);
        }
        g_free(k);
}

static void reconnect_work(Call *c)
{
        Reconnect *k = c->data;

        k->conn = open_connection(c->e, &k->callback, &k->type, &c->error);
        if (!k->conn) {
                c->r = -ECONNREFUSED;
                return;
        }
        for (guint i = 0; i < k->vms->len; i++) {
                Refound *f = &g_array_index(k->vms, Refound, i);
                int reason = 0;

                f->dom = virDomainLookupByUUIDString(k->conn, f->uuid);
                if (f->dom && (virDomainGetState(f->dom, &f->state, &reason, 0) < 0 ||
                               f->state == VIR_DOMAIN_SHUTOFF)) {
                        virDomainFree(f->dom);
                        f->dom = NULL;
                }
        }
}

/* Each VM's domain again, or its end. */
static void refind_domains(Libvirt *e, GArray *found)
{
        for (guint i = 0; i < found->len; i++) {
                Refound *f = &g_array_index(found, Refound, i);
                VmmsVm *vm = g_hash_table_lookup(e->vms, f->uuid);
                LibvirtVm *lv = vm ? vm->engine_data : NULL;

                if (!lv || lv->pending > 0 || lv->incoming)
                        continue; /* gone meanwhile, or a thread of its own says */
                if (!f->dom) {
                        report_exit(vm, "its domain was gone when the connection to libvirtd came back", NULL,
                                    VMMS_ERROR_UNAVAILABLE);
                        continue;
                }
                if (lv->dom)
                        virDomainFree(lv->dom);
                lv->dom = g_steal_pointer(&f->dom);
                if (!lv->started)
                        report_running(vm, f->state == VIR_DOMAIN_PAUSED,
                                       vm->def.started_unix_ms ? vm->def.started_unix_ms
                                                               : g_get_real_time() / 1000);
        }
}

static void reconnect_done(Call *c)
{
        Libvirt *e = c->e;
        Reconnect *k = c->data;

        e->connecting = false;
        if (c->r < 0) {
                g_free(e->why_not);
                e->why_not = g_steal_pointer(&c->error);
                return; /* the timer tries again */
        }
        clear_timer(&e->reconnect_timer);
        connected(e, g_steal_pointer(&k->conn), k->callback, k->type);
        refind_domains(e, k->vms);
        recompute_weights(e, NULL, NULL);
}

static gboolean on_reconnect(gpointer userdata)
{
        Libvirt *e = userdata;
        g_autoptr(GPtrArray) vms = NULL;
        Reconnect *k;

        if (e->connecting || e->conn)
                return G_SOURCE_CONTINUE;
        k = g_new0(Reconnect, 1);
        k->callback = -1;
        k->vms = g_array_new(FALSE, TRUE, sizeof(Refound));
        vms = tracked_vms(e);
        for (guint i = 0; i < vms->len; i++) {
                Refound f = {0};

                memcpy(f.uuid, ((LibvirtVm *)((VmmsVm *)vms->pdata[i])->engine_data)->uuid, sizeof(f.uuid));
                g_array_append_val(k->vms, f);
        }
        e->connecting = true;
        call_submit_engine(e, reconnect_work, reconnect_done, k, reconnect_free);
        return G_SOURCE_CONTINUE;
}

static bool available(VmmsEngine *e, char **ret_why)
{
        Libvirt *l = libvirt(e);

        if (stalled(l)) {
                *ret_why = not_responding(l);
                return false;
        }
        if (!l->conn || !virConnectIsAlive(l->conn)) {
                *ret_why = g_strdup(l->why_not ? l->why_not : "libvirtd is not reachable");
                return false;
        }
        if (g_strcmp0(l->domain_type, "qemu") == 0)
                *ret_why = g_strdup_printf("runs guests in QEMU's TCG (no KVM: %s)",
                                           g_strcmp0(l->config.domain_type, "qemu") == 0
                                                   ? "--libvirt-domain-type qemu"
                                                   : "libvirt offers no KVM on this host");
        return true;
}

/* ---- Lifecycle ---- */

static const char *stopped_how(int detail)
{
        switch (detail) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
                return "the guest shut down";
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
                return "the domain was destroyed";
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
                return "the guest crashed";
        case VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
                return "the domain migrated away";
        case VIR_DOMAIN_EVENT_STOPPED_SAVED:
                return "the domain was saved";
        case VIR_DOMAIN_EVENT_STOPPED_FAILED:
                return "QEMU failed";
        default:
                return "the domain stopped";
        }
}

static uint64_t job_ullong(virTypedParameterPtr params, int n, const char *name)
{
        unsigned long long v = 0;

        return virTypedParamsGetULLong(params, n, name, &v) == 1 ? v : 0;
}

/* libvirt's account of a move that just ended here (it hands the source's job
 * statistics to the destination), or NULL. */
static char *arrival_message(virDomainPtr dom)
{
        virTypedParameterPtr params = NULL;
        int n = 0, type = 0;
        char *message = NULL;

        if (virDomainGetJobStats(dom, &type, &params, &n, VIR_DOMAIN_JOB_STATS_COMPLETED) == 0 && n > 0)
                message = g_strdup_printf("libvirt migrated it here: downtime %" G_GUINT64_FORMAT
                                          " ms, %" G_GUINT64_FORMAT " bytes in %" G_GUINT64_FORMAT
                                          " ms, %" G_GUINT64_FORMAT " memory iterations",
                                          job_ullong(params, n, VIR_DOMAIN_JOB_DOWNTIME),
                                          job_ullong(params, n, VIR_DOMAIN_JOB_DATA_PROCESSED),
                                          job_ullong(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED),
                                          job_ullong(params, n, VIR_DOMAIN_JOB_MEMORY_ITERATION));
        virTypedParamsFree(params, n);
        return message;
}

/* A direct move's domain runs here now: the VM is the destination's. message: libvirt's
 * account of the move, or NULL: then the next stats rounds ask for it (libvirt sets the
 * completed job's statistics after the domain resumes). */
static void incoming_arrived(LibvirtVm *lv, virDomainPtr dom, const char *message)
{
        lv->incoming = false;
        if (lv->dom)
                virDomainFree(lv->dom);
        virDomainRef(dom);
        lv->dom = dom;
        lv->arrival_asks = message ? 0 : ARRIVAL_ASKS;
        if (message)
                vmms_vm_record_event(lv->vm, "migration", message);
        g_message("VM '%s': its domain arrived (libvirt migrated it here)", lv->vm->def.name);
        report_running(lv->vm, false, g_get_real_time() / 1000);
        recompute_weights(lv->engine, NULL, NULL);
}

static void on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
        Libvirt *e = opaque;
        char uuid[VIR_UUID_STRING_BUFLEN];
        VmmsVm *vm;
        LibvirtVm *lv;

        (void)conn;
        if (virDomainGetUUIDString(dom, uuid) < 0)
                return;
        if (!(vm = g_hash_table_lookup(e->vms, uuid))) {
                if (g_hash_table_contains(e->refused, uuid) &&
                    (event == VIR_DOMAIN_EVENT_STARTED || event == VIR_DOMAIN_EVENT_RESUMED))
                        refuse_domain(e, uuid); /* a move given up here arrived after all */
                return;                         /* not a domain of ours */
        }
        lv = vm->engine_data;
        if (lv->incoming && event == VIR_DOMAIN_EVENT_RESUMED &&
            detail == VIR_DOMAIN_EVENT_RESUMED_MIGRATED) {
                incoming_arrived(lv, dom, NULL); /* libvirt's account: the next stats round */
                return;
        }
        if (lv->incoming && event != VIR_DOMAIN_EVENT_STOPPED)
                return; /* still arriving: paused while QEMU takes the memory */
        if ((lv->migrating || lv->migrated) && event == VIR_DOMAIN_EVENT_STOPPED &&
            detail == VIR_DOMAIN_EVENT_STOPPED_MIGRATED)
                return; /* reported when the move is committed (migrate_end) */
        if (lv->saving && event == VIR_DOMAIN_EVENT_STOPPED && detail == VIR_DOMAIN_EVENT_STOPPED_SAVED)
                return; /* reported once the file is in place (on_saved) */
        if (event == VIR_DOMAIN_EVENT_CRASHED) {
                lv->crashed = true;
        } else if (event == VIR_DOMAIN_EVENT_STOPPED) {
                const char *how = stopped_how(detail);
                bool crashed = lv->crashed || detail == VIR_DOMAIN_EVENT_STOPPED_CRASHED;
                const char *guest = crashed ? "the guest kernel panicked"
                                    : detail == VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN ? "it powered off"
                                                                                  : NULL;

                lv->crashed = crashed;
                g_message("VM '%s': its domain stopped: %s", vm->def.name, how);
                report_exit(vm, how, guest, VMMS_ERROR_FAILED_PRECONDITION);
        }
}

static void start(VmmsEngine *e, VmmsVm *vm)
{
        Libvirt *l = libvirt(e);
        LibvirtVm *lv;
        g_autoptr(GArray) shares = NULL;
        g_autoptr(GPtrArray) formats = NULL;
        double reserved = 0;

        if (!l->conn || stalled(l)) {
                g_autofree char *why = stalled(l) ? not_responding(l) : NULL;

                vm_data(l, vm);
                report_exit(vm,
                            why          ? why
                            : l->why_not ? l->why_not
                                         : "libvirtd is not reachable",
                            NULL, VMMS_ERROR_UNAVAILABLE);
                return;
        }
        lv = vm_data(l, vm);
        /* Admission: the running libvirt VMs' reservations, this one's included, must fit
         * in the host's processors. */
        shares = running_shares(l, NULL, NULL);
        for (guint i = 0; i < shares->len; i++)
                reserved += g_array_index(shares, Share, i).reserve;
        if (reserved > 1.0 + 1e-9) {
                g_autofree char *why = g_strdup_printf(
                        "its Reserve of %u %% on %u processors does not fit: the running libvirt VMs "
                        "would reserve %.0f %% of this host's %u logical processors",
                        vm->def.processor.reserve, vm->def.processor.count, reserved * 100, l->host_lps);

                report_exit(vm, why, NULL, VMMS_ERROR_RESOURCE_EXHAUSTED);
                return;
        }
        if (vm->incoming_direct) {
                /* Moved here by libvirt: the domain arrives running (on_lifecycle). */
                lv->incoming = true;
                return;
        }
        /* The images are probed again: a file can change between Add-VMHardDiskDrive and
         * now (a guest writing a qcow2 header into a raw disk, a backing file added). */
        formats = g_ptr_array_new_with_free_func(g_free);
        for (guint i = 0; i < vm->def.hard_disk_drives->len; i++) {
                const char *path = g_array_index(vm->def.hard_disk_drives, VmmsHardDiskDrive, i).path;
                VmmsError error = {0};
                char *format = NULL;

                if (!vmms_disk_image_valid(path, &format, &error)) {
                        g_autofree char *why =
                                g_strdup_printf("its hard disk drive cannot be attached: %s", error.message);

                        vmms_error_clear(&error);
                        report_exit(vm, why, NULL, VMMS_ERROR_FAILED_PRECONDITION);
                        return;
                }
                g_ptr_array_add(formats, format);
        }
        lv->weight = weight_for(l, vm, &vm->def.processor);
        if (vm->restore_path) {
                /* As saved: its XML and memory, the balloon where it was (read back). */
                lv->target_kib = 0;
                lv->vmem_checked = false;
                run_blocking(lv, OP_RESTORE, NULL);
                recompute_weights(l, vm, &vm->def.processor);
                return;
        }
        lv->target_kib = vm->def.memory.startup_bytes >> 10;
        lv->vmem_size_kib = hotplug_kib(&vm->def);
        lv->vmem_requested_kib = lv->vmem_current_kib = 0;
        run_blocking(lv, OP_CREATE, domain_xml(l, vm, lv->weight, formats));
        recompute_weights(l, vm, &vm->def.processor);
}

static int attach(VmmsEngine *e, VmmsVm *vm)
{
        Libvirt *l = libvirt(e);
        LibvirtVm *lv;
        virDomainPtr dom;
        int state = 0, reason = 0;

        if (!l->conn) {
                /* Found again, or reported gone, when libvirtd is back (refind_domains). */
                vm_data(l, vm);
                return 0;
        }
        dom = virDomainLookupByUUIDString(l->conn, vm->def.id);
        if (!dom)
                return -ENOENT;
        if (virDomainGetState(dom, &state, &reason, 0) < 0 || state == VIR_DOMAIN_SHUTOFF) {
                virDomainFree(dom);
                return -ENOENT;
        }
        lv = vm_data(l, vm);
        lv->dom = dom;
        report_running(vm, state == VIR_DOMAIN_PAUSED,
                       vm->def.started_unix_ms ? vm->def.started_unix_ms : g_get_real_time() / 1000);
        return 0;
}

static void destroy_now(LibvirtVm *lv)
{
        if (lv->dom && lv->engine->conn)
                run_blocking(lv, OP_DESTROY, NULL);
}

static gboolean on_stop_timeout(gpointer userdata)
{
        LibvirtVm *lv = userdata;

        lv->stop_timer = 0;
        g_message("VM '%s': the guest did not shut down in time; turning it off", lv->vm->def.name);
        destroy_now(lv);
        return G_SOURCE_REMOVE;
}

static void power_button_work(Call *c)
{
        if (virDomainShutdownFlags(c->dom, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) < 0)
                call_failed(c);
}

static void power_button_done(Call *c)
{
        LibvirtVm *lv = c->lv;

        if (c->r >= 0 || !lv->vm)
                return;
        g_warning("VM '%s': cannot press its power button (%s); turning it off", lv->vm->def.name, c->error);
        clear_timer(&lv->stop_timer);
        destroy_now(lv);
}

static void stop(VmmsEngine *e, VmmsVm *vm, bool turn_off, uint32_t timeout_ms)
{
        LibvirtVm *lv = vm_data(libvirt(e), vm);

        if (!lv->dom || !libvirt(e)->conn) {
                report_exit(vm, "its domain was not reachable", NULL, VMMS_OK);
                return;
        }
        if (turn_off) {
                destroy_now(lv);
                return;
        }
        clear_timer(&lv->stop_timer);
        lv->stop_timer = g_timeout_add(timeout_ms, on_stop_timeout, lv);
        call_submit(call_new(libvirt(e), lv, power_button_work, power_button_done));
}

/* A move given up here: libvirt's peer-to-peer migration is the source libvirtd's and
 * goes on without vmmsd (a source vmmsd killed mid-move leaves it running), so the domain
 * can still arrive, or be arriving (paused, taking memory). Left alone it would run here
 * with no VM of vmmsd's behind it while the source's definition says Off — a second copy
 * at the next Start-VM. So it is destroyed now and whenever it comes (on_lifecycle):
 * while it is arriving, that fails the source's migration and the guest runs on there. */
typedef struct Refusal {
        char *uuid;
        char *console; /* "<source path='STATE/logs/": what a domain brought to this vmmsd has */
} Refusal;

static void refusal_free(gpointer userdata)
{
        Refusal *r = userdata;

        g_free(r->uuid);
        g_free(r->console);
        g_free(r);
}

/* Only a domain whose console is in this vmmsd's state directory: another vmmsd on the
 * same libvirtd (tests run a few) may be receiving the same VM legitimately. */
static void refuse_work(Call *c)
{
        Refusal *r = c->data;
        virDomainPtr dom = virDomainLookupByUUIDString(c->conn, r->uuid);
        g_autofree char *xml = dom ? virDomainGetXMLDesc(dom, 0) : NULL;
        int state = 0, reason = 0;

        if (xml && strstr(xml, r->console)) {
                c->found = true;
                c->paused = virDomainGetState(dom, &state, &reason, 0) == 0 && state == VIR_DOMAIN_PAUSED;
                if (virDomainDestroy(dom) < 0)
                        call_failed(c);
        }
        if (dom)
                virDomainFree(dom);
}

static void refuse_done(Call *c)
{
        const Refusal *r = c->data;

        if (!c->found)
                return;
        if (c->r < 0)
                g_warning("libvirt: cannot destroy domain %s of a move given up here: %s", r->uuid, c->error);
        else
                g_message("libvirt: destroyed domain %s of a move given up here (it was %s)", r->uuid,
                          c->paused ? "still arriving" : "running");
}

static void refuse_domain(Libvirt *e, const char *uuid)
{
        g_autofree char *logs = g_build_filename(e->config.state_dir, "logs", NULL);
        Refusal *r;

        g_hash_table_add(e->refused, g_strdup(uuid));
        if (!e->conn)
                return;
        r = g_new0(Refusal, 1);
        r->uuid = g_strdup(uuid);
        r->console = g_markup_printf_escaped("<source path='%s/", logs);
        call_submit_engine(e, refuse_work, refuse_done, r, refusal_free);
}

static void kill_vm(VmmsEngine *e, VmmsVm *vm)
{
        LibvirtVm *lv = vm->engine_data;

        if (lv && lv->incoming && !lv->dom) {
                refuse_domain(libvirt(e), lv->uuid);
                report_exit(vm, "its incoming migration was given up", NULL, VMMS_ERROR_UNAVAILABLE);
        } else if (lv) {
                destroy_now(lv);
        }
}

/* An op's reply once its call is done; none if the VM ended meanwhile (its exit ended
 * the op's job). */
static void reply_done(Call *c, VmmsErrorCode code, const char *what)
{
        LibvirtVm *lv = c->lv;
        VmmsError error = {0};

        if (!lv->vm)
                return;
        if (c->r >= 0) {
                c->reply(lv->vm, NULL);
                return;
        }
        vmms_error_set(&error, code, "VM '%s': %s: %s", lv->vm->def.name, what, c->error);
        c->reply(lv->vm, &error);
        vmms_error_clear(&error);
}

static bool reachable(VmmsVm *vm, VmmsEngineDoneFn done)
{
        LibvirtVm *lv = vm->engine_data;
        VmmsError error = {0};

        if (lv && lv->dom && lv->engine->conn)
                return true;
        vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "VM '%s': its domain is not reachable (%s)",
                       vm->def.name, lv && lv->engine->why_not ? lv->engine->why_not : "not running");
        done(vm, &error);
        vmms_error_clear(&error);
        return false;
}

static void pause_work(Call *c)
{
        if ((c->paused ? virDomainSuspend(c->dom) : virDomainResume(c->dom)) < 0)
                call_failed(c);
}

static void pause_done(Call *c)
{
        reply_done(c, VMMS_ERROR_FAILED_PRECONDITION,
                   c->paused ? "libvirt cannot suspend it" : "libvirt cannot resume it");
}

static void pause_vm(VmmsEngine *e, VmmsVm *vm, bool paused, VmmsEngineDoneFn done)
{
        Call *c;

        if (!reachable(vm, done))
                return;
        c = call_new(libvirt(e), vm->engine_data, pause_work, pause_done);
        c->paused = paused;
        c->reply = done;
        call_submit(c);
}

static void processor_done(Call *c)
{
        if (c->r < 0 && c->lv->vm) {
                c->lv->weight = 0;
                recompute_weights(c->e, NULL, NULL); /* the others' weights, as they were */
        }
        reply_done(c, VMMS_ERROR_FAILED_PRECONDITION, "libvirt refused the CPU settings");
}

/* Its own weight and quota first, then the others' weights as the new settings change
 * them (the worker keeps that order). */
static void set_processor(VmmsEngine *e, VmmsVm *vm, const VmmsProcessorSettings *p, VmmsEngineDoneFn done)
{
        Libvirt *l = libvirt(e);
        LibvirtVm *lv = vm->engine_data;
        Call *c;

        if (!reachable(vm, done))
                return;
        c = call_new(l, lv, scheduler_work, processor_done);
        c->weight = lv->weight = weight_for(l, vm, p);
        c->processor = *p;
        c->with_quota = true;
        c->reply = done;
        call_submit(c);
        recompute_weights(l, vm, p);
}

/* Asks the guest to plug `requested_kib` of its virtio-mem device: libvirt matches the
 * device by its whole live definition (address included), so the device's XML as the
 * live domain shows it goes back with a new <requested> (what virsh
 * update-memory-device does). Worker thread. */
static int set_vmem_requested(virDomainPtr dom, uint64_t requested_kib)
{
        g_autofree char *xml = virDomainGetXMLDesc(dom, 0);
        const char *dev = xml ? strstr(xml, "<memory model='virtio-mem'>") : NULL;
        const char *end = dev ? strstr(dev, "</memory>") : NULL;
        const char *req = dev ? strstr(dev, "<requested ") : NULL;
        const char *req_end = req ? strstr(req, "</requested>") : NULL;
        g_autofree char *update = NULL;

        if (!end || !req || !req_end || req_end > end)
                return -ENOENT;
        update = g_strdup_printf("%.*s<requested unit='KiB'>%" G_GUINT64_FORMAT "%.*s", (int)(req - dev), dev,
                                 requested_kib, (int)(end + strlen("</memory>") - req_end), req_end);
        return virDomainUpdateDeviceFlags(dom, update, VIR_DOMAIN_AFFECT_LIVE) < 0 ? -EIO : 0;
}

/* The balloon's target, then virtio-mem's requested size; set_* say which. */
static void memory_work(Call *c)
{
        int r;

        if (c->set_balloon &&
            virDomainSetMemoryFlags(c->dom, (unsigned long)c->balloon_kib, VIR_DOMAIN_AFFECT_LIVE) < 0) {
                call_failed(c);
                c->set_vmem = false; /* not asked: the balancer asks again */
                return;
        }
        if (c->set_vmem && (r = set_vmem_requested(c->dom, c->vmem_requested_kib)) < 0) {
                c->r = r;
                c->error = g_strdup(r == -ENOENT ? "its live definition shows no virtio-mem device"
                                                 : last_error());
        }
}

static void memory_done(Call *c)
{
        LibvirtVm *lv = c->lv;
        bool balloon_failed = c->r < 0 && c->set_balloon && !c->set_vmem;

        lv->memory_call = false;
        if (!lv->vm)
                return;
        if (balloon_failed) {
                g_warning("VM '%s': libvirt refused a balloon target of %" G_GUINT64_FORMAT " KiB: %s",
                          lv->vm->def.name, c->balloon_kib, c->error);
                return;
        }
        if (c->set_balloon)
                lv->target_kib = c->balloon_kib;
        if (c->set_vmem && c->r < 0)
                g_warning("VM '%s': libvirt refused a virtio-mem size of %" G_GUINT64_FORMAT " KiB: %s",
                          lv->vm->def.name, c->vmem_requested_kib, c->error);
        else if (c->set_vmem)
                lv->vmem_requested_kib = c->vmem_requested_kib;
}

/* Dynamic Memory's adds deflate the balloon first (the boot memory the guest already
 * has), then grow virtio-mem's requested size in whole blocks; removes go through the
 * balloon, which answers at once (a virtio-mem unplug can fall short), down to what
 * keeps the VM at Minimum while never taking the boot memory below half of Minimum
 * (the guest kernel's own memory lives there, hot-added memory is movable); only then
 * does a remove shrink virtio-mem's requested size. */
static void adjust_memory(VmmsEngine *e, VmmsVm *vm, int64_t delta_bytes, const char *reason)
{
        LibvirtVm *lv = vm->engine_data;
        const VmmsMemorySettings *m = &vm->def.memory;
        int64_t balloon, want, d, balloon_max, floor;
        uint64_t requested;
        bool set_balloon, set_vmem;
        Call *c;

        (void)e;
        (void)reason;
        if (!lv || !lv->dom || !lv->engine->conn || busy(lv) || lv->memory_call)
                return; /* the balancer's next snapshot asks again */
        balloon = (int64_t)(lv->target_kib ? lv->target_kib : lv->actual_kib);
        requested = lv->vmem_requested_kib;
        want = CLAMP(balloon + (int64_t)requested + delta_bytes / 1024, (int64_t)(m->minimum_bytes >> 10),
                     (int64_t)maximum_kib(&vm->def));
        d = want - (balloon + (int64_t)requested);
        balloon_max = lv->vmem_size_kib ? (int64_t)(m->startup_bytes >> 10) : (int64_t)maximum_kib(&vm->def);
        if (d > 0) {
                int64_t deflate = MIN(d, MAX(0, balloon_max - balloon));
                uint64_t more = (uint64_t)(d - deflate);

                balloon += deflate;
                if (more && lv->vmem_size_kib)
                        requested = MIN(lv->vmem_size_kib, (requested + more + VMEM_BLOCK_KIB - 1) /
                                                                   VMEM_BLOCK_KIB * VMEM_BLOCK_KIB);
        } else if (d < 0) {
                floor = MAX((int64_t)(m->minimum_bytes >> 10) - (int64_t)requested,
                            lv->vmem_size_kib ? (int64_t)(m->minimum_bytes >> 11) : 0);
                int64_t inflate = MIN(-d, MAX(0, balloon - floor));
                uint64_t less = (uint64_t)(-d - inflate);

                balloon -= inflate;
                if (less && requested)
                        requested -= MIN(requested, less / VMEM_BLOCK_KIB * VMEM_BLOCK_KIB);
        }
        set_balloon = (uint64_t)balloon != (lv->target_kib ? lv->target_kib : lv->actual_kib);
        set_vmem = requested != lv->vmem_requested_kib;
        if (!set_balloon && !set_vmem)
                return;
        c = call_new(lv->engine, lv, memory_work, memory_done);
        c->set_balloon = set_balloon;
        c->balloon_kib = (uint64_t)balloon;
        c->set_vmem = set_vmem;
        c->vmem_requested_kib = requested;
        lv->memory_call = true;
        call_submit(c);
}

/* The balloon's part (a deflate under way counted as done) plus what virtio-mem has
 * plugged (a plug under way counted as done). */
static uint64_t assigned_kib(const LibvirtVm *lv)
{
        return MAX(lv->actual_kib, lv->target_kib) + MAX(lv->vmem_current_kib, lv->vmem_requested_kib);
}

static void sample(VmmsEngine *e, VmmsVm *vm, VmmsVmFigures *ret)
{
        LibvirtVm *lv = vm->engine_data;

        (void)e;
        *ret = (VmmsVmFigures){0};
        if (!lv)
                return;
        ret->cpu_usage_pct = lv->cpu_pct;
        ret->assigned_bytes = assigned_kib(lv) << 10;
        ret->resident_bytes = lv->rss_kib << 10;
}

static uint64_t xml_kib(const char *from, const char *tag)
{
        const char *at = strstr(from, tag);

        at = at ? strchr(at, '>') : NULL;
        return at ? g_ascii_strtoull(at + 1, NULL, 10) : 0;
}

/* One VM's part of a stats round: asked on the worker thread, applied on the main one. */
typedef struct StatsItem {
        LibvirtVm *lv;    /* held (pending) until applied */
        virDomainPtr dom; /* a reference; NULL for a VM waiting for its incoming domain */
        char uuid[37];
        bool incoming, memory, want_xml, want_arrival; /* what to ask */
        bool have_info;
        virDomainInfo info;
        int64_t info_at_us;
        int n_stats;
        virDomainMemoryStatStruct stats[VIR_DOMAIN_MEMORY_STAT_NR];
        char *xml;             /* the live XML, for virtio-mem's sizes */
        virDomainPtr arrived;  /* incoming: its domain, running here now */
        char *arrival_message; /* incoming: libvirt's account of the move */
} StatsItem;

typedef struct StatsRound {
        GArray *items; /* StatsItem */
        virDomainStatsRecordPtr *records;
        int n_records;
        int64_t records_at_us;
} StatsRound;

static void stats_round_free(gpointer userdata)
{
        StatsRound *round = userdata;

        for (guint i = 0; i < round->items->len; i++) {
                StatsItem *it = &g_array_index(round->items, StatsItem, i);

                if (it->dom)
                        virDomainFree(it->dom);
                if (it->arrived)
                        virDomainFree(it->arrived);
                g_free(it->xml);
                g_free(it->arrival_message);
        }
        g_array_unref(round->items);
        if (round->records)
                virDomainStatsRecordListFree(round->records);
        g_free(round);
}

/* virtio-mem's size, requested and plugged sizes as libvirt shows them (it follows the
 * guest's plugging through QEMU's events): read each second, so a vmmsd that re-attached
 * knows them too. */
static void read_vmem(LibvirtVm *lv, const char *xml)
{
        const char *dev = xml ? strstr(xml, "<memory model='virtio-mem'>") : NULL;

        lv->vmem_checked = true;
        if (!dev)
                return;
        lv->vmem_size_kib = xml_kib(dev, "<size ");
        lv->vmem_requested_kib = xml_kib(dev, "<requested ");
        lv->vmem_current_kib = xml_kib(dev, "<current ");
}

/* Worker thread: each VM's CPU time, balloon stats and live XML (an incoming VM: whether
 * its domain runs here yet, in case its lifecycle event was missed), then one call for
 * every running domain's vCPU stats. */
static void stats_work(Call *c)
{
        StatsRound *round = c->data;

        for (guint i = 0; i < round->items->len; i++) {
                StatsItem *it = &g_array_index(round->items, StatsItem, i);
                int state = 0, reason = 0;

                if (it->incoming) {
                        virDomainPtr dom = virDomainLookupByUUIDString(c->conn, it->uuid);

                        if (dom && virDomainGetState(dom, &state, &reason, 0) == 0 &&
                            state == VIR_DOMAIN_RUNNING) {
                                it->arrival_message = arrival_message(dom);
                                it->arrived = g_steal_pointer(&dom);
                        }
                        if (dom)
                                virDomainFree(dom);
                        continue;
                }
                if (it->want_arrival)
                        it->arrival_message = arrival_message(it->dom);
                it->have_info = virDomainGetInfo(it->dom, &it->info) == 0;
                it->info_at_us = g_get_monotonic_time();
                if (!it->memory)
                        continue;
                it->n_stats = virDomainMemoryStats(it->dom, it->stats, VIR_DOMAIN_MEMORY_STAT_NR, 0);
                if (it->n_stats >= 0 && it->want_xml)
                        it->xml = virDomainGetXMLDesc(it->dom, 0);
        }
        round->n_records = virConnectGetAllDomainStats(c->conn, VIR_DOMAIN_STATS_VCPU, &round->records,
                                                       VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE);
        round->records_at_us = g_get_monotonic_time();
}

/* A running domain's balloon stats become its memory status, and its CPU time its
 * CPU %. */
static void apply_poll(Libvirt *e, VmmsVm *vm, StatsItem *it)
{
        LibvirtVm *lv = vm->engine_data;
        uint64_t available_kib = 0, usable_kib = 0, last_update = 0, held_kib, committed_kib = 0;
        bool have_available = false, have_usable = false;
        int64_t now_us = it->info_at_us;
        VmmsMemoryStatus status = {0};

        if (it->have_info) {
                if (lv->cpu_at_us && now_us > lv->cpu_at_us && it->info.cpuTime >= lv->cpu_time_ns)
                        lv->cpu_pct = 100.0 * (double)(it->info.cpuTime - lv->cpu_time_ns) /
                                      ((double)(now_us - lv->cpu_at_us) * 1000.0 * e->host_lps);
                lv->cpu_time_ns = it->info.cpuTime;
                lv->cpu_at_us = now_us;
        }
        if (!it->memory || busy(lv))
                return;
        for (int i = 0; i < it->n_stats; i++) {
                switch (it->stats[i].tag) {
                case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON:
                        lv->actual_kib = it->stats[i].val;
                        break;
                case VIR_DOMAIN_MEMORY_STAT_RSS:
                        lv->rss_kib = it->stats[i].val;
                        break;
                case VIR_DOMAIN_MEMORY_STAT_AVAILABLE:
                        available_kib = it->stats[i].val;
                        have_available = true;
                        break;
                case VIR_DOMAIN_MEMORY_STAT_USABLE:
                        usable_kib = it->stats[i].val;
                        have_usable = true;
                        break;
                case VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE:
                        last_update = it->stats[i].val;
                        break;
                default:
                        break;
                }
        }
        if (it->n_stats < 0)
                return;
        if (!lv->target_kib)
                lv->target_kib = lv->actual_kib;
        if (it->want_xml)
                read_vmem(lv, it->xml);
        status.received_ns = (uint64_t)now_us * 1000;
        /* The guest's balloon driver reports once it is loaded: before that there is no
         * committed figure and the balancer holds the VM. */
        /* What of its memory the guest cannot give back: all it holds (the balloon's
         * part and virtio-mem's plugged part) less MemAvailable, read so that a moving
         * balloon does not make it look small (vmms-virtio-balloon.c). */
        held_kib = lv->actual_kib + lv->vmem_current_kib;
        status.reporting = have_available && have_usable &&
                           vmms_virtio_balloon_committed(&lv->balloon, held_kib, available_kib, usable_kib,
                                                         last_update, &committed_kib);
        status.committed_bytes = status.reporting ? committed_kib << 10 : 0;
        status.visible_bytes = available_kib << 10;
        status.assigned_bytes = assigned_kib(lv) << 10;
        status.ballooned_bytes = (maximum_kib(&vm->def) - MIN(maximum_kib(&vm->def), assigned_kib(lv))) << 10;
        status.pending_remove_bytes =
                ((lv->actual_kib > lv->target_kib ? lv->actual_kib - lv->target_kib : 0) +
                 (lv->vmem_current_kib > lv->vmem_requested_kib
                          ? lv->vmem_current_kib - lv->vmem_requested_kib
                          : 0))
                << 10;
        status.resident_bytes = lv->rss_kib << 10;
        vm->engine->callbacks->memory_status(vm, &status);
}

/* ---- Counters: Hyper-V's sets from libvirt's domain stats ---- */

/* Each vCPU thread's timeslice count (the third field of its schedstat): QEMU names its
 * vCPU threads "CPU <n>/TCG" or "CPU <n>/KVM". dispatches[n] stays 0 where vmmsd cannot
 * see QEMU's threads (another PID namespace or host). */
static void vcpu_dispatches(int32_t pid, uint64_t *dispatches, size_t n_vcpus)
{
        g_autofree char *task_dir = g_strdup_printf("/proc/%d/task", pid);
        g_autoptr(GDir) dir = pid > 0 ? g_dir_open(task_dir, 0, NULL) : NULL;
        const char *tid;

        while (dir && (tid = g_dir_read_name(dir))) {
                g_autofree char *comm_path = g_build_filename(task_dir, tid, "comm", NULL);
                g_autofree char *stat_path = g_build_filename(task_dir, tid, "schedstat", NULL);
                g_autofree char *comm = NULL, *stat = NULL;
                unsigned index;
                unsigned long long run, wait, slices;

                if (!g_file_get_contents(comm_path, &comm, NULL, NULL) ||
                    sscanf(comm, "CPU %u/", &index) != 1 || index >= n_vcpus ||
                    !g_file_get_contents(stat_path, &stat, NULL, NULL) ||
                    sscanf(stat, "%llu %llu %llu", &run, &wait, &slices) != 3)
                        continue;
                dispatches[index] = slices;
        }
}

static uint64_t stat_ullong(virDomainStatsRecordPtr rec, const char *name)
{
        unsigned long long v = 0;

        return virTypedParamsGetULLong(rec->params, rec->nparams, name, &v) == 1 ? v : 0;
}

/* One domain's sample in hvd's partition shape. Run time is the vCPU thread's (TCG or
 * KVM, guest and emulation alike: QEMU does not split them), wait time the time it was
 * runnable in the host's run queue (vcpu.N.delay, schedstat's run_delay; vcpu.N.wait
 * where libvirt has no delay). */
static Vmms__Hv__PartitionCounters *sample_counters(LibvirtVm *lv, virDomainStatsRecordPtr rec)
{
        Vmms__Hv__PartitionCounters *pc = g_new0(Vmms__Hv__PartitionCounters, 1);
        const VmmsVmDefinition *def = &lv->vm->def;
        unsigned int current = 0; /* a uint, unlike the times */
        size_t n = virTypedParamsGetUInt(rec->params, rec->nparams, "vcpu.current", &current) == 1
                           ? MIN(current, VMMS_VM_VPS_MAX)
                           : 0;
        g_autofree uint64_t *dispatches = g_new0(uint64_t, MAX(n, 1));
        uint64_t maximum = maximum_kib(def) << 10;

        vmms__hv__partition_counters__init(pc);
        pc->assigned_bytes = assigned_kib(lv) << 10;
        pc->maximum_bytes = maximum;
        pc->resident_bytes = lv->rss_kib << 10;
        pc->visible_bytes = lv->actual_kib << 10;
        pc->ballooned_bytes = maximum - MIN(maximum, assigned_kib(lv) << 10);
        pc->hot_added_bytes = lv->vmem_current_kib << 10;
        vcpu_dispatches(lv->pid, dispatches, n);
        pc->vps = g_new0(Vmms__Hv__VpCounters *, MAX(n, 1));
        for (size_t i = 0; i < n; i++) {
                Vmms__Hv__VpCounters *vp = g_new0(Vmms__Hv__VpCounters, 1);
                char name[48];
                unsigned long long wait = 0;

                vmms__hv__vp_counters__init(vp);
                vp->index = (uint32_t)i;
                g_snprintf(name, sizeof(name), "vcpu.%zu.time", i);
                vp->run_ns = vp->guest_ns = stat_ullong(rec, name);
                g_snprintf(name, sizeof(name), "vcpu.%zu.delay", i);
                if (virTypedParamsGetULLong(rec->params, rec->nparams, name, &wait) != 1) {
                        g_snprintf(name, sizeof(name), "vcpu.%zu.wait", i);
                        wait = stat_ullong(rec, name);
                }
                vp->wait_ns = wait;
                vp->dispatches = dispatches[i];
                pc->vps[pc->n_vps++] = vp;
        }
        return pc;
}

/* The round's vCPU stats: each VM's last two samples. */
static void apply_counters(Libvirt *e, StatsRound *round)
{
        for (int i = 0; i < round->n_records; i++) {
                char uuid[VIR_UUID_STRING_BUFLEN];
                VmmsVm *vm;
                LibvirtVm *lv;

                if (virDomainGetUUIDString(round->records[i]->dom, uuid) < 0 ||
                    !(vm = g_hash_table_lookup(e->vms, uuid)))
                        continue;
                lv = vm->engine_data;
                if (!lv || !lv->started)
                        continue;
                counters_free(lv->counters[0]);
                lv->counters[0] = lv->counters[1];
                lv->counters_at_us[0] = lv->counters_at_us[1];
                lv->counters[1] = sample_counters(lv, round->records[i]);
                lv->counters_at_us[1] = round->records_at_us;
        }
}

static bool counters(VmmsEngine *e, const VmmsVm *vm, const Vmms__Hv__PartitionCounters **ret_prev,
                     const Vmms__Hv__PartitionCounters **ret_cur, uint64_t *ret_dt_ns)
{
        const LibvirtVm *lv = vm->engine_data;

        (void)e;
        if (!lv || !lv->counters[0] || !lv->counters[1])
                return false;
        *ret_prev = lv->counters[0];
        *ret_cur = lv->counters[1];
        *ret_dt_ns = (uint64_t)(lv->counters_at_us[1] - lv->counters_at_us[0]) * 1000;
        return true;
}

static void stats_done(Call *c)
{
        Libvirt *e = c->e;
        StatsRound *round = c->data;

        e->collecting = false;
        for (guint i = 0; i < round->items->len; i++) {
                StatsItem *it = &g_array_index(round->items, StatsItem, i);
                LibvirtVm *lv = it->lv;

                if (lv->vm && lv->incoming && it->arrived)
                        incoming_arrived(lv, it->arrived, it->arrival_message);
                else if (lv->vm && !it->incoming && lv->dom && lv->started && !lv->migrated)
                        apply_poll(e, lv->vm, it);
                if (lv->vm && it->want_arrival && lv->arrival_asks) {
                        lv->arrival_asks = it->arrival_message ? 0 : lv->arrival_asks - 1;
                        if (it->arrival_message)
                                vmms_vm_record_event(lv->vm, "migration", it->arrival_message);
                }
                if (!--lv->pending && !lv->vm)
                        lv_free(lv);
        }
        if (c->conn == e->conn)
                apply_counters(e, round);
}

/* Once a second: a stats round on the worker thread, unless the last one is still
 * there (then it counts towards "not responding"). */
static gboolean on_stats(gpointer userdata)
{
        Libvirt *e = userdata;
        g_autoptr(GPtrArray) vms = NULL;
        StatsRound *round;

        check_stall(e);
        if (!e->conn || e->collecting)
                return G_SOURCE_CONTINUE;
        round = g_new0(StatsRound, 1);
        round->items = g_array_new(FALSE, TRUE, sizeof(StatsItem));
        vms = tracked_vms(e);
        for (guint i = 0; i < vms->len; i++) {
                LibvirtVm *lv = ((VmmsVm *)vms->pdata[i])->engine_data;
                StatsItem it = {.lv = lv, .incoming = lv->incoming};

                if (!lv->incoming && (!lv->dom || !lv->started || lv->migrated))
                        continue;
                memcpy(it.uuid, lv->uuid, sizeof(it.uuid));
                if (lv->dom) {
                        it.dom = lv->dom;
                        virDomainRef(it.dom);
                }
                /* A saving or migrating domain's memory stats would wait for libvirt's job. */
                it.memory = !busy(lv);
                it.want_xml = lv->vmem_size_kib || !lv->vmem_checked;
                it.want_arrival = lv->arrival_asks > 0;
                lv->pending++;
                g_array_append_val(round->items, it);
        }
        e->collecting = true;
        call_submit_engine(e, stats_work, stats_done, round, stats_round_free);
        return G_SOURCE_CONTINUE;
}

/* Save-VM: virDomainSaveFlags writes libvirt's save image (the domain XML and QEMU's
 * migration stream) and ends the domain; Start-VM restores it (virDomainRestoreFlags).
 * A checkpoint (keep_running) is refused: libvirt saves a domain only by ending it, and
 * a memory snapshot of a transient domain with disks would need disk overlays. */
static void save(VmmsEngine *e, VmmsVm *vm, const char *path, bool keep_running, VmmsEngineSavedFn done)
{
        LibvirtVm *lv = vm->engine_data;
        VmmsError error = {0};

        if (keep_running) {
                vmms_error_set(
                        &error, VMMS_ERROR_FAILED_PRECONDITION,
                        "cannot checkpoint VM '%s': the libvirt engine can save a VM only by stopping it "
                        "(Save-VM); checkpoints of libvirt VMs are not implemented",
                        vm->def.name);
        } else if (!lv || !lv->dom || !libvirt(e)->conn || lv->saving || lv->migrating) {
                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE,
                               "cannot save VM '%s': its domain is not reachable (%s)", vm->def.name,
                               lv && (lv->saving || lv->migrating) ? "it is being saved or moved"
                               : libvirt(e)->why_not               ? libvirt(e)->why_not
                                                                   : "not running");
        }
        if (error.message) {
                done(vm, &error, 0);
                vmms_error_clear(&error);
                return;
        }
        lv->saving = true;
        lv->save_path = g_strdup(path);
        lv->save_done = done;
        run_blocking(lv, OP_SAVE, NULL);
}

/* ---- Move-VM: libvirt's peer-to-peer live migration ----
 * The source's libvirtd connects to the destination's (target->uri) and QEMU sends the
 * memory to data_host directly; vmmsd on each side moves only the definition
 * (vmms-migration.c). libvirt decides where the domain is: until its migration returns
 * success the domain runs here (a failure or an abort resumes it), after that it runs
 * there and is gone from here. The domain is transient, so nothing is defined or
 * undefined on either side; its console log moves to the destination's state directory
 * (the destination XML). Progress comes from virDomainGetJobStats every 200 ms.
 * The migration is the source libvirtd's job and outlives a source vmmsd killed mid-move;
 * a destination that gives the move up destroys the domain if it is arriving or comes
 * later (refuse_domain), so the guest runs on at the source rather than unowned here. */

#define MIGRATION_POLL_MS 200

typedef struct Migration {
        LibvirtVm *lv;
        virConnectPtr conn;
        virDomainPtr dom;
        char *uri;
        char *data_uri;
        char *xml;
        uint32_t max_downtime_ms;
        char *error;
} Migration;

static void migration_free(Migration *mig)
{
        virDomainFree(mig->dom);
        virConnectClose(mig->conn);
        g_free(mig->uri);
        g_free(mig->data_uri);
        g_free(mig->xml);
        g_free(mig->error);
        g_free(mig);
}

static void migration_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
        Migration *mig = data;
        virTypedParameterPtr params = NULL;
        int n = 0, max = 0;
        unsigned int flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_ABORT_ON_ERROR |
                             VIR_MIGRATE_AUTO_CONVERGE;

        (void)source;
        (void)cancellable;
        if (g_atomic_int_get(&mig->lv->abort_now)) {
                mig->error = g_strdup("aborted before it began");
                g_task_return_boolean(task, TRUE);
                return;
        }
        if (virDomainMigrateSetMaxDowntime(mig->dom, mig->max_downtime_ms, 0) < 0)
                g_warning("libvirt: cannot set a maximum downtime of %u ms: %s", mig->max_downtime_ms,
                          last_error());
        if (virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_URI, mig->data_uri) < 0 ||
            virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_DEST_XML, mig->xml) < 0 ||
            virDomainMigrateToURI3(mig->dom, mig->uri, params, n, flags) < 0)
                mig->error = g_strdup(last_error());
        virTypedParamsFree(params, n);
        g_task_return_boolean(task, TRUE);
}

/* Every MIGRATION_POLL_MS while libvirt migrates: how far it is, asked in a thread
 * (libvirt answers virDomainGetJobStats only between the migration's own monitor calls:
 * measured, up to 8 s while the destination starts QEMU), one poll at a time. An abort
 * asked for is sent from there too, again each poll until the migration ends (before
 * libvirt's job begins there is nothing to abort yet). */
typedef struct JobPoll {
        LibvirtVm *lv;
        virDomainPtr dom;
        bool abort, aborted, ok;
        VmmsEngineMigration progress;
} JobPoll;

static void job_poll_free(JobPoll *poll)
{
        virDomainFree(poll->dom);
        g_free(poll);
}

static void job_poll_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
        JobPoll *poll = data;
        VmmsEngineMigration *p = &poll->progress;
        virTypedParameterPtr params = NULL;
        int n = 0, type = 0, throttle = 0;

        (void)source;
        (void)cancellable;
        poll->aborted = poll->abort && virDomainAbortJob(poll->dom) == 0;
        if (virDomainGetJobStats(poll->dom, &type, &params, &n, 0) == 0 && type != VIR_DOMAIN_JOB_NONE) {
                poll->ok = true;
                p->kind = VMMS_ENGINE_MIGRATION_PROGRESS;
                p->ram_bytes = job_ullong(params, n, VIR_DOMAIN_JOB_MEMORY_TOTAL);
                p->bytes_sent = job_ullong(params, n, VIR_DOMAIN_JOB_DATA_PROCESSED);
                p->bytes_remaining = job_ullong(params, n, VIR_DOMAIN_JOB_DATA_REMAINING);
                p->round = (uint32_t)job_ullong(params, n, VIR_DOMAIN_JOB_MEMORY_ITERATION);
                p->dirty_bytes_per_s = job_ullong(params, n, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE) *
                                       MAX(job_ullong(params, n, VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE), 1);
                p->bandwidth_bytes_per_s = job_ullong(params, n, VIR_DOMAIN_JOB_MEMORY_BPS);
                if (virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_AUTO_CONVERGE_THROTTLE, &throttle) == 1)
                        p->throttle_percent = (uint32_t)MAX(throttle, 0);
        }
        virTypedParamsFree(params, n);
        g_task_return_boolean(task, TRUE);
}

static void on_job_polled(GObject *source, GAsyncResult *result, gpointer userdata)
{
        JobPoll *poll = g_task_get_task_data(G_TASK(result));
        LibvirtVm *lv = poll->lv;

        (void)source;
        (void)userdata;
        lv->pending--;
        lv->polling = false;
        if (!lv->vm) {
                if (!lv->pending)
                        lv_free(lv);
                return;
        }
        if (poll->aborted && lv->aborting)
                g_message("VM '%s': its migration is aborted", lv->vm->def.name);
        if (poll->ok && lv->migrating) {
                lv->progress = poll->progress;
                lv->engine->base.callbacks->migration(lv->vm, &lv->progress);
        }
}

static gboolean on_migration_poll(gpointer userdata)
{
        LibvirtVm *lv = userdata;
        g_autoptr(GTask) task = NULL;
        JobPoll *poll;

        if (lv->polling)
                return G_SOURCE_CONTINUE;
        poll = g_new0(JobPoll, 1);
        poll->lv = lv;
        poll->dom = lv->dom;
        virDomainRef(poll->dom);
        poll->abort = lv->aborting;
        lv->polling = true;
        lv->pending++;
        task = g_task_new(NULL, NULL, on_job_polled, NULL);
        g_task_set_task_data(task, poll, (GDestroyNotify)job_poll_free);
        g_task_run_in_thread(task, job_poll_thread);
        return G_SOURCE_CONTINUE;
}

static void on_migration_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        Migration *mig = g_task_get_task_data(G_TASK(result));
        LibvirtVm *lv = mig->lv;
        VmmsVm *vm = lv->vm;
        VmmsEngineDoneFn end_done = g_steal_pointer(&lv->end_done);
        g_autofree char *how = NULL;
        VmmsError error = {0};

        (void)source;
        (void)userdata;
        lv->pending--;
        lv->migrating = lv->aborting = false;
        g_atomic_int_set(&lv->abort_now, 0);
        clear_timer(&lv->migration_timer);
        if (!vm) {
                if (!lv->pending)
                        lv_free(lv);
                return;
        }
        lv->migrated = !mig->error;
        if (mig->error)
                g_message("VM '%s': libvirt's migration to %s ended: %s", vm->def.name, mig->uri, mig->error);
        else
                g_message("VM '%s': libvirt migrated it to %s", vm->def.name, mig->uri);
        if (end_done && mig->error) {
                end_done(vm, NULL); /* aborted: it runs on here */
        } else if (end_done) {
                /* The abort came too late: the domain runs at the destination. */
                how = g_strdup_printf("its domain migrated to %s before the move could be stopped", mig->uri);
                vmms_error_set(&error, VMMS_ERROR_FAILED_PRECONDITION, "VM '%s': %s", vm->def.name, how);
                end_done(vm, &error);
                vmms_error_clear(&error);
                report_exit(vm, how, NULL, VMMS_OK);
        } else if (mig->error) {
                VmmsEngineMigration m = {.kind = VMMS_ENGINE_MIGRATION_FAILED, .reason = mig->error};

                vm->engine->callbacks->migration(vm, &m);
        } else {
                VmmsEngineMigration m = lv->progress;

                m.kind = VMMS_ENGINE_MIGRATION_SENT;
                m.bytes_remaining = 0;
                /* libvirt's completed job is gone with the source's transient domain: the
                 * downtime is counted from the last moment it was seen running. */
                m.paused_unix_ns = (uint64_t)g_get_real_time() * 1000;
                vm->engine->callbacks->migration(vm, &m);
        }
}

/* The destination's console log, in the XML libvirt starts the domain with there. */
static char *destination_xml(LibvirtVm *lv, const char *console_path, char **ret_why)
{
        Libvirt *e = lv->engine;
        g_autofree char *name = g_strconcat(lv->vm->def.id, ".console.log", NULL);
        g_autofree char *here = g_build_filename(e->config.state_dir, "logs", name, NULL);
        g_autofree char *from = g_markup_printf_escaped("<source path='%s'", here);
        g_autofree char *to = g_markup_printf_escaped("<source path='%s'", console_path);
        g_autofree char *xml = virDomainGetXMLDesc(lv->dom, VIR_DOMAIN_XML_MIGRATABLE);
        GString *out;

        if (!xml) {
                *ret_why = g_strdup_printf("libvirt cannot give its migratable XML: %s", last_error());
                return NULL;
        }
        out = g_string_new(xml);
        if (g_string_replace(out, from, to, 1) != 1) {
                g_string_free(out, TRUE);
                *ret_why = g_strdup_printf("its domain's XML has no console at %s", here);
                return NULL;
        }
        return g_string_free(out, FALSE);
}

static void migrate_direct(VmmsEngine *e, VmmsVm *vm, const VmmsEngineDirectTarget *target,
                           const char *data_host, uint32_t max_downtime_ms, VmmsEngineMigrateFn done)
{
        LibvirtVm *lv = vm->engine_data;
        g_autoptr(GTask) task = NULL;
        g_autofree char *why = NULL;
        VmmsError error = {0};
        Migration *mig;

        if (!lv || !lv->dom || !libvirt(e)->conn || lv->migrating || lv->migrated || stalled(libvirt(e))) {
                g_autofree char *why = stalled(libvirt(e)) ? not_responding(libvirt(e)) : NULL;

                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "VM '%s': its domain is not reachable (%s)",
                               vm->def.name,
                               why                   ? why
                               : libvirt(e)->why_not ? libvirt(e)->why_not
                                                     : "not running");
                done(vm, &error, false);
                vmms_error_clear(&error);
                return;
        }
        mig = g_new0(Migration, 1);
        mig->xml = destination_xml(lv, target->console_path, &why);
        if (!mig->xml) {
                g_free(mig);
                vmms_error_set(&error, VMMS_ERROR_FAILED_PRECONDITION, "VM '%s': %s", vm->def.name, why);
                done(vm, &error, false);
                vmms_error_clear(&error);
                return;
        }
        mig->lv = lv;
        mig->conn = libvirt(e)->conn;
        virConnectRef(mig->conn);
        mig->dom = lv->dom;
        virDomainRef(mig->dom);
        mig->uri = g_strdup(target->uri);
        mig->data_uri = strchr(data_host, ':') ? g_strdup_printf("tcp://[%s]", data_host)
                                               : g_strdup_printf("tcp://%s", data_host);
        mig->max_downtime_ms = max_downtime_ms;
        lv->migrating = true;
        lv->progress = (VmmsEngineMigration){0};
        lv->pending++;
        task = g_task_new(NULL, NULL, on_migration_done, NULL);
        g_task_set_task_data(task, mig, (GDestroyNotify)migration_free);
        g_task_run_in_thread(task, migration_thread);
        lv->migration_timer = g_timeout_add(MIGRATION_POLL_MS, on_migration_poll, lv);
        done(vm, NULL, false);
}

static void migrate_end(VmmsEngine *e, VmmsVm *vm, bool commit, VmmsEngineDoneFn done)
{
        LibvirtVm *lv = vm->engine_data;
        VmmsError error = {0};

        (void)e;
        if (lv && lv->migrating && !commit) {
                g_atomic_int_set(&lv->abort_now, 1); /* the thread has not asked libvirt yet */
                lv->aborting = true;                 /* sent with each poll until it ends */
                lv->end_done = done;                 /* once libvirt's migration returns */
                return;
        }
        if (lv && lv->migrated) {
                g_autofree char *how = g_strdup("its domain migrated away");

                if (!commit) {
                        vmms_error_set(&error, VMMS_ERROR_FAILED_PRECONDITION,
                                       "VM '%s': its domain runs at the destination already", vm->def.name);
                        if (done)
                                done(vm, &error);
                        vmms_error_clear(&error);
                        done = NULL;
                }
                report_exit(vm, how, NULL, VMMS_OK);
        }
        if (done)
                done(vm, NULL);
}

/* Where a source's libvirtd sends VM `vm_id`: this host's libvirtd as peers reach it
 * (--libvirt-migration-uri, else --libvirt-uri), and its console log here. */
static bool migrate_direct_target(VmmsEngine *e, const char *vm_id, VmmsEngineDirectTarget *ret,
                                  char **ret_why)
{
        Libvirt *l = libvirt(e);
        g_autofree char *name = g_strconcat(vm_id, ".console.log", NULL);

        if (!l->conn) {
                *ret_why = g_strdup(l->why_not ? l->why_not : "libvirtd is not reachable");
                return false;
        }
        ret->uri = g_strdup(l->config.migration_uri ? l->config.migration_uri : l->config.uri);
        ret->console_path = g_build_filename(l->config.state_dir, "logs", name, NULL);
        return true;
}

/* Get-VM's Status while libvirtd does not answer or cannot be reached. */
static char *vm_status(VmmsEngine *e, const VmmsVm *vm)
{
        Libvirt *l = libvirt(e);
        g_autofree char *why = NULL;

        (void)vm;
        if (stalled(l))
                why = not_responding(l);
        else if (!l->conn)
                why = g_strdup(l->why_not ? l->why_not : "libvirtd is not reachable");
        return why ? g_strdup_printf("Not responding (%s)", why) : NULL;
}

static bool network_valid(VmmsEngine *e, const char *switch_name, VmmsError *error)
{
        Libvirt *l = libvirt(e);
        virNetworkPtr net;

        if (!l->conn || stalled(l))
                return true; /* checked by libvirt when the VM starts */
        net = virNetworkLookupByName(l->conn, switch_name);
        if (!net) {
                vmms_error_set(error, VMMS_ERROR_NOT_FOUND,
                               "libvirtd at %s has no network named '%s' (virsh net-list --all lists them)",
                               l->config.uri, switch_name);
                return false;
        }
        virNetworkFree(net);
        return true;
}

static const VmmsEngineOps libvirt_ops = {
        .network_valid = network_valid,
        .status = vm_status,
        .counters = counters,
        .name = "libvirt",
        .available = available,
        .start = start,
        .attach = attach,
        .stop = stop,
        .kill = kill_vm,
        .pause = pause_vm,
        .set_processor = set_processor,
        .adjust_memory = adjust_memory,
        .sample = sample,
        .release = release,
        .save = save,
        .migrate_direct_target = migrate_direct_target,
        .migrate_direct = migrate_direct,
        .migrate_end = migrate_end,
};

static void ignore_libvirt_error(void *userdata, virErrorPtr error)
{
        (void)userdata;
        (void)error; /* each failure is reported where it happens, with last_error() */
}

VmmsEngine *vmms_engine_libvirt_new(const VmmsLibvirtConfig *config, const VmmsEngineCallbacks *callbacks)
{
        static gsize event_loop_registered;
        Libvirt *e = g_new0(Libvirt, 1);

        /* Once per process and before the first connection: libvirt's event loop on the
         * default GLib main context, where vmmsd's main loop runs. */
        if (g_once_init_enter(&event_loop_registered)) {
                virEventRegisterDefaultImpl();
                virSetErrorFunc(NULL, ignore_libvirt_error);
                g_once_init_leave(&event_loop_registered, 1);
        }
        e->base.ops = &libvirt_ops;
        e->base.callbacks = callbacks;
        e->config.uri = g_strdup(config->uri && *config->uri ? config->uri : "qemu:///system");
        e->config.domain_type = g_strdup(config->domain_type ? config->domain_type : "auto");
        e->config.state_dir = g_strdup(config->state_dir);
        e->config.migration_uri =
                config->migration_uri && *config->migration_uri ? g_strdup(config->migration_uri) : NULL;
        e->lifecycle_callback = -1;
        e->vms = g_hash_table_new(g_str_hash, g_str_equal);
        e->refused = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        e->host_lps = MAX(1, g_get_num_processors());
        e->refs = 1;
        e->worker = g_thread_pool_new(worker_run, NULL, 1, FALSE, NULL);
        if (connect_now(e) < 0) {
                g_warning("libvirt: %s; trying again every %d s", e->why_not, RECONNECT_INTERVAL_S);
                e->reconnect_timer = g_timeout_add_seconds(RECONNECT_INTERVAL_S, on_reconnect, e);
        }
        e->stats_timer = g_timeout_add(STATS_INTERVAL_MS, on_stats, e);
        return &e->base;
}

static void engine_destroy(Libvirt *e)
{
        g_hash_table_unref(e->vms);
        g_hash_table_unref(e->refused);
        g_free((char *)e->config.uri);
        g_free((char *)e->config.domain_type);
        g_free((char *)e->config.state_dir);
        g_free((char *)e->config.migration_uri);
        g_free(e->why_not);
        g_free(e);
}

/* Domains keep running: a vmmsd that stops leaves the VMs alone. A call still on the
 * worker thread (a libvirtd that does not answer) is not waited for: it ends with the
 * process, or frees itself when it returns. */
void vmms_engine_libvirt_free(VmmsEngine *base)
{
        Libvirt *e = (Libvirt *)base;

        if (!e)
                return;
        e->freed = true;
        clear_timer(&e->reconnect_timer);
        clear_timer(&e->stats_timer);
        g_thread_pool_free(e->worker, TRUE, FALSE);
        if (e->conn) {
                if (e->lifecycle_callback >= 0)
                        virConnectDomainEventDeregisterAny(e->conn, e->lifecycle_callback);
                virConnectUnregisterCloseCallback(e->conn, on_close);
                virConnectClose(e->conn);
                e->conn = NULL;
        }
        engine_unref(e);
}
