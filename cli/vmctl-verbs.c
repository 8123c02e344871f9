/* The verb table, the handlers that call vmmsd, Get-Help, and the dispatch from argv to a verb. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmctl-format.h"
#include "vmctl-verbs.h"
#include "vmms-limits.h"

/* Per-call deadlines. A graceful Stop-VM waits for the guest and then vmmsd's own fallback timeout. */
#define VMCTL_TIMEOUT_MS (60 * 1000)
#define VMCTL_STOP_TIMEOUT_MS (10 * 60 * 1000)

/* ListEvents answers at most this many events a call (vmms.proto). */
#define VMCTL_EVENTS_MAX 10000
#define VMCTL_COUNTER_INTERVAL_MAX 3600
#define VMCTL_COUNTER_SAMPLES_MAX 1000000

#define METHOD(name) "/vmms.v1.Vmms/" name

static const char *const workloads[] = {"idle", "cpu", "memsoak", "cache", NULL};

/* Hyper-V's AutomaticStartAction words, in vmms.proto's order (NOTHING = 1, ...). */
static const char *const automatic_start_actions[] = {"Nothing", "StartIfRunning", "Start", NULL};

/* Parameter tables read best as tables; clang-format cannot lay out initializers inside macros. */
/* clang-format off */
#define COMMON_PARAMS                                                                                        \
        {.name = "Json", .type = VMCTL_PARAM_SWITCH,                                                         \
         .help = "Print the result as JSON (vmms.proto's field names)."},                                    \
        {.name = "Server", .type = VMCTL_PARAM_STRING,                                                       \
         .help = "vmmsd's address: unix:/path, a socket path, or host:port. Default: $VMMS_SOCKET, "         \
                 "else /run/vmms/vmms.sock as root, else $XDG_RUNTIME_DIR/vmms/vmms.sock."},                 \
        {.name = "CertificateFile", .type = VMCTL_PARAM_STRING,                                              \
         .help = "PEM CA certificate to trust: talk TLS to a host:port server."},                            \
        {.name = "ClientCertificateFile", .type = VMCTL_PARAM_STRING,                                        \
         .help = "PEM client certificate vmmsd's CA signed, presented over TLS (vmmsd requires one)."},     \
        {.name = "ClientKeyFile", .type = VMCTL_PARAM_STRING,                                                \
         .help = "PEM private key of -ClientCertificateFile."}

#define VM_NAME_PARAM(pname)                                                                                 \
        {.name = pname, .type = VMCTL_PARAM_STRING, .required = true, .positional = true,                    \
         .help = "The VM, by name or UUID."}

#define PASSTHRU_PARAM                                                                                       \
        {.name = "Passthru", .type = VMCTL_PARAM_SWITCH, .help = "Print the VM afterwards."}
/* clang-format on */

static const VmctlParam common_params[] = {COMMON_PARAMS};

static const VmctlParam get_vm_params[] = {
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .positional = true,
         .help = "A VM name or UUID; '*' and '?' match any text and any one character. Default: all VMs."},
        {.name = "Cluster",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Every VM of the cluster this host is in, with the host that owns it (a name is a "
                 "pattern)."},
        COMMON_PARAMS,
};

static const VmctlParam new_vm_params[] = {
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .positional = true,
         .max = VMMS_NAME_LENGTH_MAX,
         .help = "The new VM's name."},
        {.name = "MemoryStartupBytes",
         .type = VMCTL_PARAM_SIZE,
         .required = true,
         .min = VMMS_MEMORY_BYTES_MIN,
         .max = VMMS_MEMORY_BYTES_MAX,
         .help = "Memory the VM starts with (512MB, 2GB, or bytes; MB means MiB)."},
        {.name = "ProcessorCount",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_PROCESSOR_COUNT_MIN,
         .max = VMMS_PROCESSOR_COUNT_MAX,
         .has_default = true,
         .default_value = VMMS_PROCESSOR_COUNT_DEFAULT,
         .help = "Virtual processors."},
        {.name = "Workload",
         .type = VMCTL_PARAM_CHOICE,
         .choices = workloads,
         .help = "What the guest runs: idle, cpu (burns its VPs) or memsoak (touches memory). Default idle."},
        {.name = "BootArgs",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_BOOT_ARGS_LENGTH_MAX,
         .help = "More guest boot parameters, e.g. \"memsoak_mb=64 memsoak_step_mb=8\"."},
        {.name = "Notes",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_NOTES_LENGTH_MAX,
         .help = "Free text kept with the VM."},
        {.name = "AutomaticStartAction",
         .type = VMCTL_PARAM_CHOICE,
         .choices = automatic_start_actions,
         .help = "What vmmsd does with the VM when the host starts: Nothing, StartIfRunning (start it if it "
                 "was running) or Start. Default StartIfRunning."},
        {.name = "Engine",
         .type = VMCTL_PARAM_STRING,
         .help = "What runs the VM; Get-VMHost lists this host's engines. Default bundled (hvd and a "
                 "worker)."},
        {.name = "KernelPath",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_BOOT_ARGS_LENGTH_MAX,
         .help = "libvirt engine: the guest's kernel (an absolute path vmmsd and QEMU can read)."},
        {.name = "InitrdPath",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_BOOT_ARGS_LENGTH_MAX,
         .help = "libvirt engine: the kernel's initrd (an absolute path)."},
        {.name = "KernelArgs",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_BOOT_ARGS_LENGTH_MAX,
         .help = "libvirt engine: the kernel's command line (console=ttyS0 is added unless it names a "
                 "console)."},
        {.name = "VHDPath",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_BOOT_ARGS_LENGTH_MAX,
         .help = "libvirt engine: a disk image to boot (qcow2 or raw, an absolute path)."},
        COMMON_PARAMS,
};

static const VmctlParam remove_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "Force",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Turn the VM off first if it is running or paused."},
        COMMON_PARAMS,
};

static const VmctlParam vm_only_params[] = {
        VM_NAME_PARAM("Name"),
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam move_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "DestinationHost",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = 300,
         .help = "The destination vmmsd's --migration-listen address, HOST:PORT; in a cluster, also "
                 "a host's name (Get-ClusterNode)."},
        {.name = "MaximumDowntime",
         .type = VMCTL_PARAM_STRING,
         .max = 32,
         .help = "The longest pause the guest may see: 50ms, 2s (default 300ms). Live pre-copy stops "
                 "iterating once what is left fits it; a quick migration pauses for the whole transfer."},
        {.name = "AsJob",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Return once the move has begun; Get-VM shows its progress, Stop-VMMigration cancels it."},
        {.name = "CompatibilityReport",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Compare the VM with the destination first (as Compare-VM), print the report, and move "
                 "only if it is compatible."},
        COMMON_PARAMS,
};

static const VmctlParam compare_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "DestinationHost",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = 300,
         .help = "The host to compare with: its vmmsd's --migration-listen address, HOST:PORT."},
        COMMON_PARAMS,
};

static const VmctlParam checkpoint_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "SnapshotName",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = VMMS_NAME_LENGTH_MAX,
         .help = "The checkpoint's name; no other checkpoint of the VM may have it."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam get_snapshot_params[] = {
        VM_NAME_PARAM("VMName"),
        COMMON_PARAMS,
};

static const VmctlParam snapshot_ref_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = VMMS_NAME_LENGTH_MAX,
         .help = "The checkpoint, by name (Get-VMSnapshot lists them)."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam stop_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "TurnOff",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Turn the VM off at once, without asking the guest."},
        {.name = "Force",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Shut down even if the guest does not answer: turn it off after the timeout."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam set_processor_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "Count",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_PROCESSOR_COUNT_MIN,
         .max = VMMS_PROCESSOR_COUNT_MAX,
         .help = "Virtual processors."},
        {.name = "Reserve",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_PROCESSOR_RESERVE_MIN,
         .max = VMMS_PROCESSOR_RESERVE_MAX,
         .has_default = true,
         .default_value = VMMS_PROCESSOR_RESERVE_DEFAULT,
         .help = "% of one logical processor guaranteed to each VP when it is runnable."},
        {.name = "Maximum",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_PROCESSOR_MAXIMUM_MIN,
         .max = VMMS_PROCESSOR_MAXIMUM_MAX,
         .has_default = true,
         .default_value = VMMS_PROCESSOR_MAXIMUM_DEFAULT,
         .help = "% of one logical processor each VP may use at most (100 = no cap; 0 is refused, as in "
                 "Hyper-V)."},
        {.name = "RelativeWeight",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_PROCESSOR_RELATIVE_WEIGHT_MIN,
         .max = VMMS_PROCESSOR_RELATIVE_WEIGHT_MAX,
         .has_default = true,
         .default_value = VMMS_PROCESSOR_RELATIVE_WEIGHT_DEFAULT,
         .help = "Share among VMs competing for processors."},
        {.name = "CompatibilityForMigrationEnabled",
         .type = VMCTL_PARAM_BOOL,
         .help = "$true: the guest sees a normalized processor (the same CPUID on every host), so the VM can "
                 "move to hosts of another CPU model or engine build; only while the VM is Off."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam set_memory_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "DynamicMemoryEnabled",
         .type = VMCTL_PARAM_BOOL,
         .help = "$true lets the balancer add and remove memory between Minimum and Maximum."},
        {.name = "StartupBytes",
         .type = VMCTL_PARAM_SIZE,
         .min = VMMS_MEMORY_BYTES_MIN,
         .max = VMMS_MEMORY_BYTES_MAX,
         .help = "Memory the VM starts with."},
        {.name = "MinimumBytes",
         .type = VMCTL_PARAM_SIZE,
         .min = VMMS_MEMORY_BYTES_MIN,
         .max = VMMS_MEMORY_BYTES_MAX,
         .help = "Least memory Dynamic Memory leaves the VM; at most StartupBytes."},
        {.name = "MaximumBytes",
         .type = VMCTL_PARAM_SIZE,
         .min = VMMS_MEMORY_BYTES_MIN,
         .max = VMMS_MEMORY_BYTES_MAX,
         .help = "Most memory Dynamic Memory gives the VM; at least StartupBytes."},
        {.name = "Buffer",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_MEMORY_BUFFER_MIN,
         .max = VMMS_MEMORY_BUFFER_MAX,
         .has_default = true,
         .default_value = VMMS_MEMORY_BUFFER_DEFAULT,
         .help = "% of memory to keep on top of what the guest commits."},
        {.name = "Priority",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_MEMORY_PRIORITY_MIN,
         .max = VMMS_MEMORY_PRIORITY_MAX,
         .has_default = true,
         .default_value = VMMS_MEMORY_PRIORITY_DEFAULT,
         .help = "Who gets memory first when the host runs short."},
        {.name = "PagingBytes",
         .type = VMCTL_PARAM_SIZE,
         .min = 0,
         .max = VMMS_PAGING_BYTES_MAX,
         .help = "Size of the guest's paging disk, checked against free space when the VM starts; 0 = 4 x "
                 "StartupBytes."},
        {.name = "GoalSeeking",
         .type = VMCTL_PARAM_BOOL,
         .help = "$true gives the VM the smallest footprint found whose paging stays low, not committed + "
                 "Buffer."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam set_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "Notes",
         .type = VMCTL_PARAM_STRING,
         .allow_empty = true,
         .max = VMMS_NOTES_LENGTH_MAX,
         .help = "Free text kept with the VM; '' clears it."},
        {.name = "AutomaticStartAction",
         .type = VMCTL_PARAM_CHOICE,
         .choices = automatic_start_actions,
         .help = "What vmmsd does with the VM when the host starts: Nothing, StartIfRunning or Start."},
        {.name = "Workload",
         .type = VMCTL_PARAM_CHOICE,
         .choices = workloads,
         .help = "What the guest runs: idle, cpu or memsoak. Only while the VM is off."},
        {.name = "BootArgs",
         .type = VMCTL_PARAM_STRING,
         .allow_empty = true,
         .max = VMMS_BOOT_ARGS_LENGTH_MAX,
         .help = "More guest boot parameters; '' clears them. Only while the VM is off."},
        {.name = "HighlyAvailable",
         .type = VMCTL_PARAM_BOOL,
         .help = "$true: in a cluster, the leader restarts the VM on another host when its host is Down."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam suspend_cluster_node_params[] = {
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .positional = true,
         .max = 63,
         .help = "The host's name in the cluster (Get-ClusterNode)."},
        {.name = "Drain",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Live-migrate its running VMs to the other hosts and wait until none is left."},
        COMMON_PARAMS,
};

static const VmctlParam resume_cluster_node_params[] = {
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .positional = true,
         .max = 63,
         .help = "The host's name in the cluster (Get-ClusterNode)."},
        COMMON_PARAMS,
};

static const VmctlParam set_cluster_params[] = {
        {.name = "AutoBalance",
         .type = VMCTL_PARAM_BOOL,
         .help = "$true: the leader moves VMs off a host over-committed by memory or CPU to a host with "
                 "room."},
        {.name = "AutoBalanceThreshold",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_CLUSTER_AUTO_BALANCE_MIN,
         .max = VMMS_CLUSTER_AUTO_BALANCE_MAX,
         .help = "The Average Pressure (%) over which a host is over-committed by memory."},
        {.name = "AutoBalanceCpuWait",
         .type = VMCTL_PARAM_UINT,
         .min = VMMS_CLUSTER_CPU_WAIT_MIN_US,
         .max = VMMS_CLUSTER_CPU_WAIT_MAX_US,
         .help = "The CPU Wait Time Per Dispatch (µs) at or over which a host is over-committed by CPU."},
        COMMON_PARAMS,
};

static const VmctlParam rename_vm_params[] = {
        VM_NAME_PARAM("Name"),
        {.name = "NewName",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = VMMS_NAME_LENGTH_MAX,
         .help = "The VM's new name; no other VM may have it."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam get_vm_settings_params[] = {
        {.name = "VMName",
         .type = VMCTL_PARAM_STRING,
         .positional = true,
         .help = "A VM name or UUID; '*' and '?' are wildcards. Default: all VMs."},
        COMMON_PARAMS,
};

static const VmctlParam hard_disk_drive_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "Path",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = 1024,
         .help = "The disk image: qcow2 (no backing file) or raw; a relative path is taken from the "
                 "current directory."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam add_network_adapter_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "SwitchName",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = 64,
         .help = "The libvirt network the adapter is on (virsh net-list --all lists them)."},
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .max = VMMS_NAME_LENGTH_MAX,
         .help = "The adapter's name. Default: \"Network Adapter\", numbered if taken."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam remove_network_adapter_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "Name",
         .type = VMCTL_PARAM_STRING,
         .required = true,
         .max = VMMS_NAME_LENGTH_MAX,
         .help = "The adapter, by name (Get-VMNetworkAdapter lists them)."},
        PASSTHRU_PARAM,
        COMMON_PARAMS,
};

static const VmctlParam no_params[] = {COMMON_PARAMS};

static const VmctlParam get_counter_params[] = {
        {.name = "Counter",
         .type = VMCTL_PARAM_LIST,
         .positional = true,
         .help = "Counter paths '\\Set(Instance)\\Counter'; (*) matches every instance. Default: every "
                 "counter."},
        {.name = "SampleInterval",
         .type = VMCTL_PARAM_UINT,
         .min = 1,
         .max = VMCTL_COUNTER_INTERVAL_MAX,
         .has_default = true,
         .default_value = 1,
         .help = "Seconds between samples, with -MaxSamples or -Continuous."},
        {.name = "MaxSamples",
         .type = VMCTL_PARAM_UINT,
         .min = 1,
         .max = VMCTL_COUNTER_SAMPLES_MAX,
         .has_default = true,
         .default_value = 1,
         .help = "How many samples to take, -SampleInterval apart."},
        {.name = "Continuous",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Keep sampling, -SampleInterval apart, until Ctrl-C (with -Json: one object per line)."},
        COMMON_PARAMS,
};

static const VmctlParam connect_vm_params[] = {
        VM_NAME_PARAM("VMName"),
        {.name = "Tail",
         .type = VMCTL_PARAM_UINT,
         .min = 1,
         .max = VMMS_CONSOLE_TAIL_LINES_MAX,
         .has_default = true,
         .default_value = VMMS_CONSOLE_TAIL_LINES_DEFAULT,
         .help = "Show the console's last N lines first."},
        COMMON_PARAMS,
};

static const VmctlParam get_event_params[] = {
        {.name = "VMName",
         .type = VMCTL_PARAM_STRING,
         .positional = true,
         .help = "Only this VM's events (name or UUID)."},
        {.name = "Newest",
         .type = VMCTL_PARAM_UINT,
         .min = 1,
         .max = VMCTL_EVENTS_MAX,
         .help = "Only the last N events. Default: the last 10000."},
        {.name = "Wait",
         .type = VMCTL_PARAM_SWITCH,
         .help = "Keep printing events as they happen, until Ctrl-C (with -Json: one object per line)."},
        COMMON_PARAMS,
};

static const VmctlParam get_help_params[] = {
        {.name = "Name", .type = VMCTL_PARAM_STRING, .positional = true, .help = "The verb to explain."},
        COMMON_PARAMS,
};

static int fail(VmctlContext *ctx, int error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(VmctlContext *ctx, int error, const char *fmt, ...)
{
        va_list ap;

        g_free(ctx->error);
        va_start(ap, fmt);
        ctx->error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return error;
}

static void emit(VmctlContext *ctx, const GString *text)
{
        fputs(text->str, ctx->out);
        fflush(ctx->out);
}

static const char *arg_text(const VmctlContext *ctx, const char *name)
{
        const VmctlValue *v = vmctl_args_get(ctx->args, name);

        return v->set ? v->text : NULL;
}

static bool arg_flag(const VmctlContext *ctx, const char *name)
{
        const VmctlValue *v = vmctl_args_get(ctx->args, name);

        return v->set && v->flag;
}

static int call(VmctlContext *ctx, const char *method, const ProtobufCMessage *request,
                const ProtobufCMessageDescriptor *reply_type, int64_t timeout_ms,
                ProtobufCMessage **ret_reply)
{
        return vmctl_client_call(ctx->client, method, request, reply_type, timeout_ms, ret_reply, NULL,
                                 &ctx->error);
}

/* A set of VMs from GetVm (one, by exact name or UUID) or ListVms (a pattern, or all). */
typedef struct VmList {
        ProtobufCMessage *reply;
        Vmms__V1__Vm *single;
        Vmms__V1__Vm **vms;
        size_t n_vms;
} VmList;

static void vm_list_clear(VmList *list)
{
        if (list->reply)
                protobuf_c_message_free_unpacked(list->reply, NULL);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmList, vm_list_clear)

static int compare_vm_names(const void *a, const void *b)
{
        const Vmms__V1__Vm *x = *(Vmms__V1__Vm *const *)a, *y = *(Vmms__V1__Vm *const *)b;

        return g_ascii_strcasecmp(x->name, y->name);
}

/* An exact name goes through GetVm, so an unknown VM is an error, as in PowerShell; a pattern that
 * matches nothing is an empty list. */
static int fetch_vms(VmctlContext *ctx, const char *pattern, VmList *list)
{
        int r;

        if (pattern && !strpbrk(pattern, "*?")) {
                Vmms__V1__VmRef ref = VMMS__V1__VM_REF__INIT;

                ref.vm = (char *)pattern;
                r = call(ctx, METHOD("GetVm"), &ref.base, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS,
                         &list->reply);
                if (r < 0)
                        return r;
                list->single = (Vmms__V1__Vm *)list->reply;
                list->vms = &list->single;
                list->n_vms = 1;
                return 0;
        } else {
                Vmms__V1__ListVmsRequest request = VMMS__V1__LIST_VMS_REQUEST__INIT;
                Vmms__V1__ListVmsResponse *response;

                request.name_filter = (char *)(pattern ? pattern : "");
                r = call(ctx, METHOD("ListVms"), &request.base, &vmms__v1__list_vms_response__descriptor,
                         VMCTL_TIMEOUT_MS, &list->reply);
                if (r < 0)
                        return r;
                response = (Vmms__V1__ListVmsResponse *)list->reply;
                list->vms = response->vms;
                list->n_vms = response->n_vms;
                if (list->n_vms > 1)
                        qsort(list->vms, list->n_vms, sizeof(list->vms[0]), compare_vm_names);
                return 0;
        }
}

typedef void (*VmTableFunc)(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);

static int print_vms(VmctlContext *ctx, const char *pattern, VmTableFunc table)
{
        g_auto(VmList) list = {0};
        g_autoptr(GString) out = g_string_new(NULL);
        int r;

        r = fetch_vms(ctx, pattern, &list);
        if (r < 0)
                return r;
        if (ctx->json)
                vmctl_json_append_array(out, (ProtobufCMessage *const *)list.vms, list.n_vms, true);
        else
                table(out, list.vms, list.n_vms);
        emit(ctx, out);
        return 0;
}

/* Get-VM -Cluster: the cluster's VMs as etcd has them, with their hosts. */
static int print_cluster_vms(VmctlContext *ctx, const char *pattern)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__ListVmsRequest request = VMMS__V1__LIST_VMS_REQUEST__INIT;
        Vmms__V1__ListVmsResponse *list;
        int r;

        request.name_filter = (char *)(pattern ? pattern : "");
        request.cluster = true;
        r = call(ctx, METHOD("ListVms"), &request.base, &vmms__v1__list_vms_response__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        list = (Vmms__V1__ListVmsResponse *)reply;
        if (list->n_vms > 1)
                qsort(list->vms, list->n_vms, sizeof(list->vms[0]), compare_vm_names);
        if (ctx->json)
                vmctl_json_append_array(out, (ProtobufCMessage *const *)list->vms, list->n_vms, true);
        else
                vmctl_format_cluster_vms(out, list->vms, list->n_vms);
        emit(ctx, out);
        return 0;
}

static int handle_get_vm(VmctlContext *ctx)
{
        if (arg_flag(ctx, "Cluster"))
                return print_cluster_vms(ctx, arg_text(ctx, "Name"));
        return print_vms(ctx, arg_text(ctx, "Name"), vmctl_format_vms);
}

static int handle_get_vm_processor(VmctlContext *ctx)
{
        return print_vms(ctx, arg_text(ctx, "VMName"), vmctl_format_processors);
}

static int handle_get_vm_memory(VmctlContext *ctx)
{
        return print_vms(ctx, arg_text(ctx, "VMName"), vmctl_format_memory);
}

/* Prints a VM a verb returned: JSON with -Json, the table with -Passthru (or always, for New-VM). */
static void print_vm_result(VmctlContext *ctx, const ProtobufCMessage *reply, bool table, VmTableFunc format)
{
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__Vm *vm = (Vmms__V1__Vm *)reply;

        if (ctx->json)
                vmctl_json_append_message(out, reply, true);
        else if (table)
                format(out, &vm, 1);
        emit(ctx, out);
}

Vmms__V1__AutomaticStartAction vmctl_automatic_start_action(const char *text)
{
        for (size_t i = 0; automatic_start_actions[i]; i++)
                if (g_ascii_strcasecmp(automatic_start_actions[i], text) == 0)
                        return (Vmms__V1__AutomaticStartAction)(VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_NOTHING +
                                                                i);
        return VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_UNSPECIFIED;
}

void vmctl_create_init(VmctlCreate *create, const VmctlArgs *args)
{
        const VmctlValue *v;

        *create = (VmctlCreate){
                .request = VMMS__V1__CREATE_VM_REQUEST__INIT,
                .processor = VMMS__V1__PROCESSOR_SETTINGS__INIT,
                .memory = VMMS__V1__MEMORY_SETTINGS__INIT,
        };
        create->request.name = (char *)vmctl_args_get(args, "Name")->text;
        create->memory.startup_bytes = vmctl_args_get(args, "MemoryStartupBytes")->number;
        create->request.memory = &create->memory;
        v = vmctl_args_get(args, "ProcessorCount");
        if (v->set) {
                create->processor.count = (uint32_t)v->number;
                create->request.processor = &create->processor;
        }
        if ((v = vmctl_args_get(args, "Workload"))->set)
                create->request.workload = (char *)v->text;
        if ((v = vmctl_args_get(args, "BootArgs"))->set)
                create->request.boot_args = (char *)v->text;
        if ((v = vmctl_args_get(args, "Notes"))->set)
                create->request.notes = (char *)v->text;
        if ((v = vmctl_args_get(args, "AutomaticStartAction"))->set)
                create->request.automatic_start_action = vmctl_automatic_start_action(v->text);
        if ((v = vmctl_args_get(args, "Engine"))->set)
                create->request.engine = (char *)v->text;
        if ((v = vmctl_args_get(args, "KernelPath"))->set)
                create->request.kernel_path = (char *)v->text;
        if ((v = vmctl_args_get(args, "InitrdPath"))->set)
                create->request.initrd_path = (char *)v->text;
        if ((v = vmctl_args_get(args, "KernelArgs"))->set)
                create->request.kernel_args = (char *)v->text;
        if ((v = vmctl_args_get(args, "VHDPath"))->set)
                create->request.vhd_path = (char *)v->text;
}

static int handle_new_vm(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        VmctlCreate create;
        int r;

        vmctl_create_init(&create, ctx->args);
        r = call(ctx, METHOD("CreateVm"), &create.request.base, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS,
                 &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, true, vmctl_format_vms);
        return 0;
}

static int vm_ref_call(VmctlContext *ctx, const char *method, int64_t timeout_ms)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__VmRef ref = VMMS__V1__VM_REF__INIT;
        int r;

        ref.vm = (char *)arg_text(ctx, "Name");
        r = call(ctx, method, &ref.base, &vmms__v1__vm__descriptor, timeout_ms, &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), vmctl_format_vms);
        return 0;
}

static int handle_start_vm(VmctlContext *ctx)
{
        return vm_ref_call(ctx, METHOD("StartVm"), VMCTL_TIMEOUT_MS);
}

static int handle_suspend_vm(VmctlContext *ctx)
{
        return vm_ref_call(ctx, METHOD("PauseVm"), VMCTL_TIMEOUT_MS);
}

static int handle_save_vm(VmctlContext *ctx)
{
        return vm_ref_call(ctx, METHOD("SaveVm"), VMCTL_TIMEOUT_MS);
}

static int connect_client(VmctlContext *ctx, VmctlClient **ret_client);

/* A quick migration can take as long as saving, copying and restoring the VM. */
#define MOVE_TIMEOUT_MS (10 * 60 * 1000)
#define MOVE_WATCH_RETRY_US (50 * 1000)

/* "50ms", "2s" or a bare number of milliseconds. */
static int parse_downtime(const char *text, uint32_t *ret_ms)
{
        char *end = NULL;
        uint64_t n;

        if (!text || !g_ascii_isdigit(*text))
                return -EINVAL;
        n = g_ascii_strtoull(text, &end, 10);
        if (g_ascii_strcasecmp(end, "s") == 0)
                n *= 1000;
        else if (*end && g_ascii_strcasecmp(end, "ms") != 0)
                return -EINVAL;
        if (n == 0 || n > 60000)
                return -EINVAL;
        *ret_ms = (uint32_t)n;
        return 0;
}

/* MoveVm on its own channel (the main one watches the progress meanwhile). */
typedef struct MoveJob {
        VmctlClient *client;
        Vmms__V1__MoveVmRequest *request;
        ProtobufCMessage *reply;
        char *error;
        int r;
        gint done;
} MoveJob;

static gpointer move_job_run(gpointer userdata)
{
        MoveJob *job = userdata;

        job->r = vmctl_client_call(job->client, METHOD("MoveVm"), &job->request->base,
                                   &vmms__v1__move_vm_result__descriptor, MOVE_TIMEOUT_MS, &job->reply, NULL,
                                   &job->error);
        g_atomic_int_set(&job->done, 1);
        return NULL;
}

typedef struct MoveWatch {
        VmctlContext *ctx;
        bool as_job;
        bool seen;
        uint32_t last_percent;
        char *last_phase;
} MoveWatch;

static int on_move_progress(const ProtobufCMessage *message, void *userdata)
{
        const Vmms__V1__MoveVmResult *p = (const Vmms__V1__MoveVmResult *)message;
        MoveWatch *w = userdata;
        g_autoptr(GString) out = g_string_new(NULL);

        w->seen = true;
        if (w->as_job)
                return -ECANCELED; /* it has begun: the job runs on without us */
        if (g_strcmp0(w->last_phase, p->phase) == 0 && p->percent == w->last_percent)
                return 0;
        g_free(w->last_phase);
        w->last_phase = g_strdup(p->phase);
        w->last_percent = p->percent;
        if (w->ctx->json) {
                vmctl_json_append_message(out, message, false);
                g_string_append_c(out, '\n');
        } else if (g_strcmp0(p->phase, "completed") != 0 && g_strcmp0(p->phase, "failed") != 0 &&
                   g_strcmp0(p->phase, "cancelled") != 0) {
                g_autofree char *done = vmctl_format_size(p->data_processed);
                g_autofree char *total = vmctl_format_size(p->data_total);

                g_string_append_printf(out, "Migrating (%u %%) %s: %s of %s sent\n", p->percent, p->phase,
                                       done, total);
        }
        if (out->len) {
                fputs(out->str, w->ctx->out);
                fflush(w->ctx->out);
        }
        return 0;
}

/* Compare-VM's call and report; *ret_compatible says what the destination answered. */
static int compare_vm(VmctlContext *ctx, bool *ret_compatible)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__CompareVmRequest request = VMMS__V1__COMPARE_VM_REQUEST__INIT;
        int r;

        request.vm = (char *)arg_text(ctx, "Name");
        request.destination_host = (char *)arg_text(ctx, "DestinationHost");
        r = call(ctx, METHOD("CompareVm"), &request.base, &vmms__v1__compare_vm_result__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                vmctl_json_append_message(out, reply, true);
        else
                vmctl_format_compare(out, request.vm, (const Vmms__V1__CompareVmResult *)reply);
        emit(ctx, out);
        *ret_compatible = ((const Vmms__V1__CompareVmResult *)reply)->compatible;
        return 0;
}

/* The report is the answer, whichever way it went (as Hyper-V's Compare-VM). */
static int handle_compare_vm(VmctlContext *ctx)
{
        bool compatible;

        return compare_vm(ctx, &compatible);
}

static int handle_move_vm(VmctlContext *ctx)
{
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__MoveVmRequest request = VMMS__V1__MOVE_VM_REQUEST__INIT;
        Vmms__V1__VmRef ref = VMMS__V1__VM_REF__INIT;
        const Vmms__V1__MoveVmResult *result;
        const char *downtime = arg_text(ctx, "MaximumDowntime");
        MoveWatch watch = {.ctx = ctx, .as_job = arg_flag(ctx, "AsJob")};
        MoveJob job = {.request = &request};
        g_autofree char *watch_error = NULL;
        GThread *thread;
        bool compatible;
        int r;

        request.vm = (char *)arg_text(ctx, "Name");
        request.destination_host = (char *)arg_text(ctx, "DestinationHost");
        if (downtime && parse_downtime(downtime, &request.max_downtime_ms) < 0)
                return fail(ctx, -EINVAL,
                            "-MaximumDowntime '%s' is not a duration of 1 ms to 60 s (50ms, 2s)", downtime);
        if (arg_flag(ctx, "CompatibilityReport")) {
                r = compare_vm(ctx, &compatible);
                if (r < 0)
                        return r;
                if (!compatible)
                        return fail(ctx, -EPERM,
                                    "not moved: %s is not compatible (the report above says why)",
                                    arg_text(ctx, "DestinationHost"));
        }
        r = connect_client(ctx, &job.client);
        if (r < 0)
                return r;
        thread = g_thread_new("move", move_job_run, &job);
        /* The move registers once vmmsd has it: until then WatchMoveVm says it is not moving. */
        ref.vm = request.vm;
        while (!g_atomic_int_get(&job.done)) {
                g_clear_pointer(&watch_error, g_free);
                r = vmctl_client_stream(ctx->client, METHOD("WatchMoveVm"), &ref.base,
                                        &vmms__v1__move_vm_result__descriptor, on_move_progress, &watch, NULL,
                                        &watch_error);
                if (watch.seen)
                        break;
                g_usleep(MOVE_WATCH_RETRY_US);
        }
        if (watch.as_job && watch.seen) {
                /* The process ends with the call in flight: vmmsd goes on with the move. */
                if (ctx->json) {
                        g_autoptr(JsonBuilder) b = json_builder_new();
                        g_autoptr(JsonNode) root = NULL;

                        json_builder_begin_object(b);
                        json_builder_set_member_name(b, "vm");
                        json_builder_add_string_value(b, request.vm);
                        json_builder_set_member_name(b, "destinationHost");
                        json_builder_add_string_value(b, request.destination_host);
                        json_builder_set_member_name(b, "job");
                        json_builder_add_string_value(b, "started");
                        json_builder_end_object(b);
                        root = json_builder_get_root(b);
                        vmctl_json_append_node(out, root, true);
                } else
                        g_string_append_printf(
                                out,
                                "Move-VM %s to %s runs as a job: Get-VM %s shows its progress, "
                                "Stop-VMMigration %s cancels it\n",
                                request.vm, request.destination_host, request.vm, request.vm);
                emit(ctx, out);
                g_free(watch.last_phase);
                fflush(ctx->out);
                _exit(0);
        }
        g_thread_join(thread);
        g_free(watch.last_phase);
        vmctl_client_free(job.client);
        if (job.r < 0) {
                g_free(ctx->error);
                ctx->error = g_steal_pointer(&job.error);
                return job.r;
        }
        result = (const Vmms__V1__MoveVmResult *)job.reply;
        if (ctx->json) {
                vmctl_json_append_message(out, job.reply, true);
        } else {
                g_autofree char *size = vmctl_format_size(result->data_processed);

                g_string_append_printf(out,
                                       "Moved %s to %s (%s migration): %s sent, downtime %" G_GUINT64_FORMAT
                                       " ms, total %" G_GUINT64_FORMAT " ms\n",
                                       request.vm, result->destination_host, result->mode, size,
                                       result->downtime_ms, result->time_elapsed_ms);
        }
        protobuf_c_message_free_unpacked(job.reply, NULL);
        emit(ctx, out);
        return 0;
}

static int handle_stop_vm_migration(VmctlContext *ctx)
{
        return vm_ref_call(ctx, METHOD("StopVmMigration"), MOVE_TIMEOUT_MS);
}

static int handle_checkpoint_vm(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__CheckpointVmRequest request = VMMS__V1__CHECKPOINT_VM_REQUEST__INIT;
        int r;

        request.vm = (char *)arg_text(ctx, "Name");
        request.name = (char *)arg_text(ctx, "SnapshotName");
        r = call(ctx, METHOD("CheckpointVm"), &request.base, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS,
                 &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), vmctl_format_vms);
        return 0;
}

static int handle_get_vm_snapshot(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__VmRef ref = VMMS__V1__VM_REF__INIT;
        Vmms__V1__ListCheckpointsResponse *list;
        int r;

        ref.vm = (char *)arg_text(ctx, "VMName");
        r = call(ctx, METHOD("ListCheckpoints"), &ref.base, &vmms__v1__list_checkpoints_response__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        list = (Vmms__V1__ListCheckpointsResponse *)reply;
        if (ctx->json)
                vmctl_json_append_array(out, (ProtobufCMessage *const *)list->checkpoints,
                                        list->n_checkpoints, true);
        else
                vmctl_format_checkpoints(out, ref.vm, list->checkpoints, list->n_checkpoints);
        emit(ctx, out);
        return 0;
}

static int handle_restore_vm_snapshot(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__CheckpointRef ref = VMMS__V1__CHECKPOINT_REF__INIT;
        int r;

        ref.vm = (char *)arg_text(ctx, "VMName");
        ref.name = (char *)arg_text(ctx, "Name");
        r = call(ctx, METHOD("RestoreCheckpoint"), &ref.base, &vmms__v1__vm__descriptor,
                 VMCTL_STOP_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), vmctl_format_vms);
        return 0;
}

static int handle_remove_vm_snapshot(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__CheckpointRef ref = VMMS__V1__CHECKPOINT_REF__INIT;

        ref.vm = (char *)arg_text(ctx, "VMName");
        ref.name = (char *)arg_text(ctx, "Name");
        return call(ctx, METHOD("RemoveCheckpoint"), &ref.base,
                    &vmms__v1__remove_checkpoint_response__descriptor, VMCTL_TIMEOUT_MS, &reply);
}

static int handle_resume_vm(VmctlContext *ctx)
{
        return vm_ref_call(ctx, METHOD("ResumeVm"), VMCTL_TIMEOUT_MS);
}

/* ---- The libvirt engine's devices ---- */

static int hard_disk_drive_call(VmctlContext *ctx, const char *method)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__HardDiskDriveRequest request = VMMS__V1__HARD_DISK_DRIVE_REQUEST__INIT;
        /* As PowerShell: a relative path is the current directory's. */
        g_autofree char *path = g_canonicalize_filename(arg_text(ctx, "Path"), NULL);
        int r;

        request.vm = (char *)arg_text(ctx, "VMName");
        request.path = path;
        r = call(ctx, method, &request.base, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), vmctl_format_hard_disk_drives);
        return 0;
}

static int handle_add_vm_hard_disk_drive(VmctlContext *ctx)
{
        return hard_disk_drive_call(ctx, METHOD("AddHardDiskDrive"));
}

static int handle_remove_vm_hard_disk_drive(VmctlContext *ctx)
{
        return hard_disk_drive_call(ctx, METHOD("RemoveHardDiskDrive"));
}

static int network_adapter_call(VmctlContext *ctx, const char *method)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__NetworkAdapterRequest request = VMMS__V1__NETWORK_ADAPTER_REQUEST__INIT;
        const VmctlValue *v;
        int r;

        request.vm = (char *)arg_text(ctx, "VMName");
        if ((v = vmctl_args_get(ctx->args, "SwitchName")) && v->set)
                request.switch_name = (char *)v->text;
        if ((v = vmctl_args_get(ctx->args, "Name")) && v->set)
                request.name = (char *)v->text;
        r = call(ctx, method, &request.base, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), vmctl_format_network_adapters);
        return 0;
}

static int handle_add_vm_network_adapter(VmctlContext *ctx)
{
        return network_adapter_call(ctx, METHOD("AddNetworkAdapter"));
}

static int handle_remove_vm_network_adapter(VmctlContext *ctx)
{
        return network_adapter_call(ctx, METHOD("RemoveNetworkAdapter"));
}

/* Get-VMHardDiskDrive / Get-VMNetworkAdapter: every device of the VMs the pattern
 * names, as one table or one JSON array. */
static int print_devices(VmctlContext *ctx, bool drives)
{
        g_auto(VmList) list = {0};
        g_autoptr(GString) out = g_string_new(NULL);
        g_autoptr(GPtrArray) all = g_ptr_array_new();
        int r;

        r = fetch_vms(ctx, arg_text(ctx, "VMName"), &list);
        if (r < 0)
                return r;
        if (!ctx->json) {
                (drives ? vmctl_format_hard_disk_drives : vmctl_format_network_adapters)(out, list.vms,
                                                                                         list.n_vms);
                emit(ctx, out);
                return 0;
        }
        for (size_t i = 0; i < list.n_vms; i++) {
                const Vmms__V1__Vm *vm = list.vms[i];

                for (size_t j = 0; drives && j < vm->n_hard_disk_drives; j++)
                        g_ptr_array_add(all, vm->hard_disk_drives[j]);
                for (size_t j = 0; !drives && j < vm->n_network_adapters; j++)
                        g_ptr_array_add(all, vm->network_adapters[j]);
        }
        vmctl_json_append_array(out, (ProtobufCMessage *const *)all->pdata, all->len, true);
        emit(ctx, out);
        return 0;
}

static int handle_get_vm_hard_disk_drive(VmctlContext *ctx)
{
        return print_devices(ctx, true);
}

static int handle_get_vm_network_adapter(VmctlContext *ctx)
{
        return print_devices(ctx, false);
}

static int stop_vm(VmctlContext *ctx, const char *vm, bool turn_off, bool force, ProtobufCMessage **ret_reply)
{
        Vmms__V1__StopVmRequest request = VMMS__V1__STOP_VM_REQUEST__INIT;

        request.vm = (char *)vm;
        request.turn_off = turn_off;
        request.force = force;
        return call(ctx, METHOD("StopVm"), &request.base, &vmms__v1__vm__descriptor,
                    turn_off ? VMCTL_TIMEOUT_MS : VMCTL_STOP_TIMEOUT_MS, ret_reply);
}

static int handle_stop_vm(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        int r;

        r = stop_vm(ctx, arg_text(ctx, "Name"), arg_flag(ctx, "TurnOff"), arg_flag(ctx, "Force"), &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), vmctl_format_vms);
        return 0;
}

static bool vm_state_is_active(Vmms__V1__VmState state)
{
        return state == VMMS__V1__VM_STATE__VM_STATE_STARTING ||
               state == VMMS__V1__VM_STATE__VM_STATE_RUNNING ||
               state == VMMS__V1__VM_STATE__VM_STATE_PAUSED || state == VMMS__V1__VM_STATE__VM_STATE_STOPPING;
}

/* Without -Force vmmsd refuses to remove a VM that is not off; with it, vmctl turns the VM off first. */
static int handle_remove_vm(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__VmRef ref = VMMS__V1__VM_REF__INIT;
        int r;

        ref.vm = (char *)arg_text(ctx, "Name");
        if (arg_flag(ctx, "Force")) {
                g_autoptr(ProtobufCMessage) vm = NULL, stopped = NULL;

                r = call(ctx, METHOD("GetVm"), &ref.base, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS, &vm);
                if (r < 0)
                        return r;
                if (vm_state_is_active(((Vmms__V1__Vm *)vm)->state)) {
                        r = stop_vm(ctx, ref.vm, true, true, &stopped);
                        if (r < 0)
                                return r;
                }
        }
        r = call(ctx, METHOD("RemoveVm"), &ref.base, &vmms__v1__remove_vm_response__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                vmctl_json_append_message(out, reply, true);
        emit(ctx, out);
        return 0;
}

/* A Set-VMProcessor/Set-VMMemory parameter, the settings field it writes and names in update_mask. */
typedef struct MaskedField {
        const char *param;
        const char *field;
        size_t offset;
        size_t size; /* of the field: uint32_t or uint64_t (a bool parameter writes a protobuf_c_boolean) */
} MaskedField;

#define MASKED(param, type, field)                                                                           \
        {                                                                                                    \
                param, #field, G_STRUCT_OFFSET(type, field), sizeof(((type *)0)->field)                      \
        }

static const MaskedField processor_fields[] = {
        MASKED("Count", Vmms__V1__ProcessorSettings, count),
        MASKED("Reserve", Vmms__V1__ProcessorSettings, reserve),
        MASKED("Maximum", Vmms__V1__ProcessorSettings, maximum),
        MASKED("RelativeWeight", Vmms__V1__ProcessorSettings, relative_weight),
        MASKED("CompatibilityForMigrationEnabled", Vmms__V1__ProcessorSettings,
               compatibility_for_migration_enabled),
};

static const MaskedField memory_fields[] = {
        MASKED("DynamicMemoryEnabled", Vmms__V1__MemorySettings, dynamic_memory_enabled),
        MASKED("StartupBytes", Vmms__V1__MemorySettings, startup_bytes),
        MASKED("MinimumBytes", Vmms__V1__MemorySettings, minimum_bytes),
        MASKED("MaximumBytes", Vmms__V1__MemorySettings, maximum_bytes),
        MASKED("Buffer", Vmms__V1__MemorySettings, buffer),
        MASKED("Priority", Vmms__V1__MemorySettings, priority),
        MASKED("PagingBytes", Vmms__V1__MemorySettings, paging_bytes),
        MASKED("GoalSeeking", Vmms__V1__MemorySettings, goal_seeking),
};

/* Writes each given parameter into settings and its field name into mask; returns how many, or
 * -EINVAL naming the parameters when none is given. */
static int apply_masked_fields(const MaskedField *fields, size_t n_fields, const VmctlArgs *args,
                               void *settings, char **mask, char **ret_error)
{
        g_autoptr(GString) names = g_string_new(NULL);
        int n_mask = 0;

        for (size_t i = 0; i < n_fields; i++) {
                const VmctlValue *v = vmctl_args_get(args, fields[i].param);
                void *field = (char *)settings + fields[i].offset;

                g_string_append_printf(names, "%s-%s", i ? ", " : "", fields[i].param);
                if (!v->set)
                        continue;
                if (args->params[v - args->values].type == VMCTL_PARAM_BOOL)
                        *(protobuf_c_boolean *)field = v->flag;
                else if (fields[i].size == sizeof(uint64_t))
                        *(uint64_t *)field = v->number;
                else
                        *(uint32_t *)field = (uint32_t)v->number;
                mask[n_mask++] = (char *)fields[i].field;
        }
        if (n_mask == 0) {
                if (ret_error)
                        *ret_error = g_strdup_printf("give at least one of %s", names->str);
                return -EINVAL;
        }
        return n_mask;
}

int vmctl_processor_update_init(VmctlProcessorUpdate *update, const VmctlArgs *args, char **ret_error)
{
        VmctlProcessorUpdate u = {
                .request = VMMS__V1__UPDATE_PROCESSOR_REQUEST__INIT,
                .processor = VMMS__V1__PROCESSOR_SETTINGS__INIT,
        };
        int n;

        n = apply_masked_fields(processor_fields, G_N_ELEMENTS(processor_fields), args, &u.processor, u.mask,
                                ret_error);
        if (n < 0)
                return n;
        *update = u;
        update->request.vm = (char *)vmctl_args_get(args, "VMName")->text;
        update->request.processor = &update->processor;
        update->request.update_mask = update->mask;
        update->request.n_update_mask = (size_t)n;
        return 0;
}

/* Minimum <= Startup <= Maximum among the sizes given; vmmsd checks them against the stored ones too. */
static int check_memory_order(const VmctlArgs *args, char **ret_error)
{
        static const char *const order[] = {"MinimumBytes", "StartupBytes", "MaximumBytes"};

        for (size_t i = 0; i < G_N_ELEMENTS(order); i++) {
                for (size_t j = i + 1; j < G_N_ELEMENTS(order); j++) {
                        const VmctlValue *low = vmctl_args_get(args, order[i]),
                                         *high = vmctl_args_get(args, order[j]);

                        if (!low->set || !high->set || low->number <= high->number)
                                continue;
                        if (ret_error)
                                *ret_error = g_strdup_printf("-%s (%s) must not be more than -%s (%s)",
                                                             order[i], low->text, order[j], high->text);
                        return -EINVAL;
                }
        }
        return 0;
}

int vmctl_memory_update_init(VmctlMemoryUpdate *update, const VmctlArgs *args, char **ret_error)
{
        VmctlMemoryUpdate u = {
                .request = VMMS__V1__UPDATE_MEMORY_REQUEST__INIT,
                .memory = VMMS__V1__MEMORY_SETTINGS__INIT,
        };
        int n;

        G_STATIC_ASSERT(G_N_ELEMENTS(memory_fields) <= G_N_ELEMENTS(u.mask));
        n = check_memory_order(args, ret_error);
        if (n < 0)
                return n;
        n = apply_masked_fields(memory_fields, G_N_ELEMENTS(memory_fields), args, &u.memory, u.mask,
                                ret_error);
        if (n < 0)
                return n;
        *update = u;
        update->request.vm = (char *)vmctl_args_get(args, "VMName")->text;
        update->request.memory = &update->memory;
        update->request.update_mask = update->mask;
        update->request.n_update_mask = (size_t)n;
        return 0;
}

/* Sends a Set-VM* update; -Passthru prints the settings table, -Json the VM. */
static int send_update(VmctlContext *ctx, const char *method, const ProtobufCMessage *request,
                       VmTableFunc format)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        int r;

        r = call(ctx, method, request, &vmms__v1__vm__descriptor, VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        print_vm_result(ctx, reply, arg_flag(ctx, "Passthru"), format);
        return 0;
}

static int handle_set_vm_processor(VmctlContext *ctx)
{
        VmctlProcessorUpdate update;
        int r;

        r = vmctl_processor_update_init(&update, ctx->args, &ctx->error);
        if (r < 0)
                return r;
        return send_update(ctx, METHOD("UpdateProcessor"), &update.request.base, vmctl_format_processors);
}

static int handle_set_vm_memory(VmctlContext *ctx)
{
        VmctlMemoryUpdate update;
        int r;

        r = vmctl_memory_update_init(&update, ctx->args, &ctx->error);
        if (r < 0)
                return r;
        return send_update(ctx, METHOD("UpdateMemory"), &update.request.base, vmctl_format_memory);
}

/* The value of a parameter the verb's table may not have; NULL when it has none or it was not given. */
static const VmctlValue *given_value(const VmctlArgs *args, const char *name)
{
        for (size_t i = 0; i < args->n_params; i++)
                if (strcmp(args->params[i].name, name) == 0)
                        return args->values[i].set ? &args->values[i] : NULL;
        return NULL;
}

/* Set-VM's and Rename-VM's text parameters, the UpdateVmRequest field each writes and names in
 * update_mask. */
typedef struct VmTextField {
        const char *param;
        const char *field;
        size_t offset;
} VmTextField;

#define VM_TEXT_FIELD(param, field)                                                                          \
        {                                                                                                    \
                param, #field, G_STRUCT_OFFSET(Vmms__V1__UpdateVmRequest, field)                             \
        }

static const VmTextField vm_text_fields[] = {
        VM_TEXT_FIELD("NewName", name),
        VM_TEXT_FIELD("Notes", notes),
        VM_TEXT_FIELD("Workload", workload),
        VM_TEXT_FIELD("BootArgs", boot_args),
};

int vmctl_vm_update_init(VmctlVmUpdate *update, const VmctlArgs *args, char **ret_error)
{
        Vmms__V1__UpdateVmRequest request = VMMS__V1__UPDATE_VM_REQUEST__INIT;
        const VmctlValue *v;
        size_t n = 0;

        for (size_t i = 0; i < G_N_ELEMENTS(vm_text_fields); i++) {
                v = given_value(args, vm_text_fields[i].param);
                if (!v)
                        continue;
                *(char **)((char *)&request + vm_text_fields[i].offset) = (char *)v->text;
                update->mask[n++] = (char *)vm_text_fields[i].field;
        }
        v = given_value(args, "AutomaticStartAction");
        if (v) {
                request.automatic_start_action = vmctl_automatic_start_action(v->text);
                update->mask[n++] = (char *)"automatic_start_action";
        }
        v = given_value(args, "HighlyAvailable");
        if (v) {
                request.highly_available = v->flag;
                update->mask[n++] = (char *)"highly_available";
        }
        if (n == 0) {
                if (ret_error)
                        *ret_error =
                                g_strdup("give at least one of -Notes, -AutomaticStartAction, -Workload, "
                                         "-BootArgs, -HighlyAvailable");
                return -EINVAL;
        }
        request.vm = (char *)vmctl_args_get(args, "Name")->text;
        request.update_mask = update->mask;
        request.n_update_mask = n;
        update->request = request;
        return 0;
}

static int handle_set_vm(VmctlContext *ctx)
{
        VmctlVmUpdate update;
        int r;

        r = vmctl_vm_update_init(&update, ctx->args, &ctx->error);
        if (r < 0)
                return r;
        return send_update(ctx, METHOD("UpdateVm"), &update.request.base, vmctl_format_vms);
}

static int handle_get_vm_host(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__GetHostRequest request = VMMS__V1__GET_HOST_REQUEST__INIT;
        int r;

        r = call(ctx, METHOD("GetHost"), &request.base, &vmms__v1__host__descriptor, VMCTL_TIMEOUT_MS,
                 &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                vmctl_json_append_message(out, reply, true);
        else
                vmctl_format_host(out, (Vmms__V1__Host *)reply);
        emit(ctx, out);
        return 0;
}

static int handle_get_cluster_node(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__ListClusterNodesRequest request = VMMS__V1__LIST_CLUSTER_NODES_REQUEST__INIT;
        Vmms__V1__ListClusterNodesResponse *list;
        int r;

        r = call(ctx, METHOD("ListClusterNodes"), &request.base,
                 &vmms__v1__list_cluster_nodes_response__descriptor, VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        list = (Vmms__V1__ListClusterNodesResponse *)reply;
        if (ctx->json)
                vmctl_json_append_array(out, (ProtobufCMessage *const *)list->nodes, list->n_nodes, true);
        else
                vmctl_format_cluster_nodes(out, list->nodes, list->n_nodes);
        emit(ctx, out);
        return 0;
}

static int print_cluster_nodes(VmctlContext *ctx, ProtobufCMessage *reply)
{
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__ListClusterNodesResponse *list = (Vmms__V1__ListClusterNodesResponse *)reply;

        if (ctx->json)
                vmctl_json_append_array(out, (ProtobufCMessage *const *)list->nodes, list->n_nodes, true);
        else
                vmctl_format_cluster_nodes(out, list->nodes, list->n_nodes);
        emit(ctx, out);
        return 0;
}

/* -Drain waits until no VM the host owns runs (Get-VM -Cluster), saying how many are left. */
static int wait_drained(VmctlContext *ctx, const char *host)
{
        size_t last = SIZE_MAX;

        for (int i = 0; i < 1200; i++) {
                g_autoptr(ProtobufCMessage) reply = NULL;
                Vmms__V1__ListVmsRequest request = VMMS__V1__LIST_VMS_REQUEST__INIT;
                Vmms__V1__ListVmsResponse *list;
                size_t running = 0;
                int r;

                request.cluster = true;
                r = call(ctx, METHOD("ListVms"), &request.base, &vmms__v1__list_vms_response__descriptor,
                         VMCTL_TIMEOUT_MS, &reply);
                if (r < 0)
                        return r;
                list = (Vmms__V1__ListVmsResponse *)reply;
                for (size_t k = 0; k < list->n_vms; k++)
                        if (g_strcmp0(list->vms[k]->host, host) == 0 &&
                            (list->vms[k]->state == VMMS__V1__VM_STATE__VM_STATE_RUNNING ||
                             list->vms[k]->state == VMMS__V1__VM_STATE__VM_STATE_MIGRATING))
                                running++;
                if (running == 0)
                        return 0;
                if (running != last && !ctx->json)
                        g_print("Draining %s: %zu VM%s left\n", host, running, running == 1 ? "" : "s");
                last = running;
                g_usleep(500 * 1000);
        }
        ctx->error = g_strdup_printf("%s still runs VMs after 10 minutes of draining (Get-VM -Cluster; its "
                                     "events say why a VM stays)",
                                     host);
        return -ETIMEDOUT;
}

static int handle_suspend_cluster_node(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__SuspendClusterNodeRequest request = VMMS__V1__SUSPEND_CLUSTER_NODE_REQUEST__INIT;
        int r;

        request.name = (char *)arg_text(ctx, "Name");
        request.drain = arg_flag(ctx, "Drain");
        r = call(ctx, METHOD("SuspendClusterNode"), &request.base,
                 &vmms__v1__list_cluster_nodes_response__descriptor, VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        if (request.drain) {
                g_autoptr(ProtobufCMessage) after = NULL;
                Vmms__V1__ListClusterNodesRequest list = VMMS__V1__LIST_CLUSTER_NODES_REQUEST__INIT;

                r = wait_drained(ctx, request.name);
                if (r < 0)
                        return r;
                r = call(ctx, METHOD("ListClusterNodes"), &list.base,
                         &vmms__v1__list_cluster_nodes_response__descriptor, VMCTL_TIMEOUT_MS, &after);
                if (r < 0)
                        return r;
                return print_cluster_nodes(ctx, after);
        }
        return print_cluster_nodes(ctx, reply);
}

static int print_cluster_settings(VmctlContext *ctx, ProtobufCMessage *reply)
{
        g_autoptr(GString) out = g_string_new(NULL);

        if (ctx->json)
                vmctl_json_append_message(out, reply, true);
        else
                vmctl_format_cluster_settings(out, (Vmms__V1__ClusterSettings *)reply);
        emit(ctx, out);
        return 0;
}

static int handle_get_cluster(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__GetClusterRequest request = VMMS__V1__GET_CLUSTER_REQUEST__INIT;
        int r;

        r = call(ctx, METHOD("GetCluster"), &request.base, &vmms__v1__cluster_settings__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        return r < 0 ? r : print_cluster_settings(ctx, reply);
}

static int handle_set_cluster(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__SetClusterRequest request = VMMS__V1__SET_CLUSTER_REQUEST__INIT;
        char *mask[3];
        const VmctlValue *v;
        int r;

        if ((v = given_value(ctx->args, "AutoBalance"))) {
                request.auto_balance = v->flag;
                mask[request.n_update_mask++] = (char *)"auto_balance";
        }
        if ((v = given_value(ctx->args, "AutoBalanceThreshold"))) {
                request.auto_balance_threshold = (uint32_t)v->number;
                mask[request.n_update_mask++] = (char *)"auto_balance_threshold";
        }
        if ((v = given_value(ctx->args, "AutoBalanceCpuWait"))) {
                request.auto_balance_cpu_wait_us = (uint32_t)v->number;
                mask[request.n_update_mask++] = (char *)"auto_balance_cpu_wait_us";
        }
        if (request.n_update_mask == 0) {
                ctx->error = g_strdup(
                        "give at least one of -AutoBalance, -AutoBalanceThreshold, -AutoBalanceCpuWait");
                return -EINVAL;
        }
        request.update_mask = mask;
        r = call(ctx, METHOD("SetCluster"), &request.base, &vmms__v1__cluster_settings__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        return r < 0 ? r : print_cluster_settings(ctx, reply);
}

static int handle_resume_cluster_node(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        Vmms__V1__ResumeClusterNodeRequest request = VMMS__V1__RESUME_CLUSTER_NODE_REQUEST__INIT;
        int r;

        request.name = (char *)arg_text(ctx, "Name");
        r = call(ctx, METHOD("ResumeClusterNode"), &request.base,
                 &vmms__v1__list_cluster_nodes_response__descriptor, VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        return print_cluster_nodes(ctx, reply);
}

static int handle_get_vm_host_health(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__GetHostHealthRequest request = VMMS__V1__GET_HOST_HEALTH_REQUEST__INIT;
        int r;

        r = call(ctx, METHOD("GetHostHealth"), &request.base, &vmms__v1__host_health__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                vmctl_json_append_message(out, reply, true);
        else
                vmctl_format_host_health(out, (Vmms__V1__HostHealth *)reply);
        emit(ctx, out);
        return 0;
}

/* One GetCounters call, printed: a table, or JSON (one object per line when sampling
 * repeatedly, so a reader can take each sample as it comes). */
static int get_counters_once(VmctlContext *ctx, const Vmms__V1__GetCountersRequest *request, bool repeated)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        int r;

        r = call(ctx, METHOD("GetCounters"), &request->base, &vmms__v1__get_counters_response__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        if (ctx->json)
                vmctl_json_append_message(out, reply, !repeated);
        else
                vmctl_format_counters(out, (Vmms__V1__GetCountersResponse *)reply);
        if (repeated && !ctx->json)
                g_string_append_c(out, '\n');
        emit(ctx, out);
        return 0;
}

/* As PowerShell: one sample, or -MaxSamples of them, or -Continuous until Ctrl-C (which
 * ends vmctl, as for Get-VMEvent -Wait), -SampleInterval seconds apart. */
static int handle_get_counter(VmctlContext *ctx)
{
        Vmms__V1__GetCountersRequest request = VMMS__V1__GET_COUNTERS_REQUEST__INIT;
        const VmctlValue *paths = vmctl_args_get(ctx->args, "Counter");
        const VmctlValue *interval = vmctl_args_get(ctx->args, "SampleInterval");
        const VmctlValue *max_samples = vmctl_args_get(ctx->args, "MaxSamples");
        bool continuous = arg_flag(ctx, "Continuous");
        uint64_t seconds = interval->set ? interval->number : 1,
                 samples = max_samples->set ? max_samples->number : 1;
        bool repeated = continuous || samples > 1;
        int r;

        if (continuous && max_samples->set)
                return fail(ctx, -EINVAL, "give -Continuous or -MaxSamples, not both");
        if (paths->set) {
                request.paths = (char **)paths->list->pdata;
                request.n_paths = paths->list->len;
        }
        for (uint64_t i = 0; continuous || i < samples; i++) {
                if (i > 0)
                        g_usleep(seconds * G_USEC_PER_SEC);
                r = get_counters_once(ctx, &request, repeated);
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct EventWatch {
        VmctlContext *ctx;
        bool header_printed;
} EventWatch;

static void print_event_line(EventWatch *watch, const Vmms__V1__Event *event)
{
        g_autoptr(GString) out = g_string_new(NULL);

        if (watch->ctx->json)
                vmctl_json_append_message(out, &event->base, false);
        else
                vmctl_format_event_line(out, event, !watch->header_printed);
        watch->header_printed = true;
        emit(watch->ctx, out);
}

static int on_watched_event(const ProtobufCMessage *message, void *userdata)
{
        print_event_line(userdata, (const Vmms__V1__Event *)message);
        return 0;
}

/* ListEvents with after_id 0 answers the newest `limit` events, oldest first; -Wait then streams from
 * the last one shown, so nothing falls between the two calls. */
static int handle_get_vm_event(VmctlContext *ctx)
{
        g_autoptr(ProtobufCMessage) reply = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        Vmms__V1__ListEventsRequest list = VMMS__V1__LIST_EVENTS_REQUEST__INIT;
        Vmms__V1__WatchEventsRequest watch_request = VMMS__V1__WATCH_EVENTS_REQUEST__INIT;
        const VmctlValue *newest = vmctl_args_get(ctx->args, "Newest");
        const char *vm = arg_text(ctx, "VMName");
        Vmms__V1__ListEventsResponse *events;
        EventWatch watch = {.ctx = ctx};
        int r;

        list.vm = (char *)(vm ? vm : "");
        list.limit = newest->set ? (uint32_t)newest->number : VMCTL_EVENTS_MAX;
        r = call(ctx, METHOD("ListEvents"), &list.base, &vmms__v1__list_events_response__descriptor,
                 VMCTL_TIMEOUT_MS, &reply);
        if (r < 0)
                return r;
        events = (Vmms__V1__ListEventsResponse *)reply;
        if (!arg_flag(ctx, "Wait")) {
                if (ctx->json)
                        vmctl_json_append_array(out, (ProtobufCMessage *const *)events->events,
                                                events->n_events, true);
                else
                        vmctl_format_events(out, events->events, events->n_events);
                emit(ctx, out);
                return 0;
        }
        for (size_t i = 0; i < events->n_events; i++) {
                print_event_line(&watch, events->events[i]);
                watch_request.after_id = MAX(watch_request.after_id, events->events[i]->id);
        }
        watch_request.vm = list.vm;
        return vmctl_client_stream(ctx->client, METHOD("WatchEvents"), &watch_request.base,
                                   &vmms__v1__event__descriptor, on_watched_event, &watch, NULL, &ctx->error);
}

static int on_console_chunk(const ProtobufCMessage *message, void *userdata)
{
        const Vmms__V1__ConsoleChunk *chunk = (const Vmms__V1__ConsoleChunk *)message;
        VmctlContext *ctx = userdata;

        if (ctx->json) {
                g_autoptr(GString) out = g_string_new(NULL);

                vmctl_json_append_message(out, message, false);
                g_string_append_c(out, '\n');
                emit(ctx, out);
                return 0;
        }
        fwrite(chunk->data.data, 1, chunk->data.len, ctx->out);
        fflush(ctx->out);
        return 0;
}

/* The guest's console, followed like vmconnect's window or `virsh console`, until Ctrl-C. */
static int handle_connect_vm(VmctlContext *ctx)
{
        Vmms__V1__WatchConsoleRequest request = VMMS__V1__WATCH_CONSOLE_REQUEST__INIT;
        const VmctlValue *tail = vmctl_args_get(ctx->args, "Tail");

        request.vm = (char *)arg_text(ctx, "VMName");
        request.tail_lines = tail->set ? (uint32_t)tail->number : VMMS_CONSOLE_TAIL_LINES_DEFAULT;
        return vmctl_client_stream(ctx->client, METHOD("WatchConsole"), &request.base,
                                   &vmms__v1__console_chunk__descriptor, on_console_chunk, ctx, NULL,
                                   &ctx->error);
}

static int handle_get_help(VmctlContext *ctx);

static const VmctlVerb verbs[] = {
        {
                .name = "Get-VM",
                .synopsis = "Lists VMs with their state, CPU usage, memory and uptime.",
                .example = "vmctl Get-VM 'web*'",
                .params = get_vm_params,
                .n_params = G_N_ELEMENTS(get_vm_params),
                .handler = handle_get_vm,
                .needs_server = true,
        },
        {
                .name = "New-VM",
                .synopsis = "Defines a new VM (it starts Off).",
                .example = "vmctl New-VM -Name web -MemoryStartupBytes 512MB -ProcessorCount 2 -Workload cpu",
                .params = new_vm_params,
                .n_params = G_N_ELEMENTS(new_vm_params),
                .handler = handle_new_vm,
                .needs_server = true,
        },
        {
                .name = "Remove-VM",
                .synopsis = "Deletes a VM's definition; the VM must be off unless -Force.",
                .example = "vmctl Remove-VM web -Force",
                .params = remove_vm_params,
                .n_params = G_N_ELEMENTS(remove_vm_params),
                .handler = handle_remove_vm,
                .needs_server = true,
        },
        {
                .name = "Start-VM",
                .synopsis = "Starts a VM.",
                .example = "vmctl Start-VM web",
                .params = vm_only_params,
                .n_params = G_N_ELEMENTS(vm_only_params),
                .handler = handle_start_vm,
                .needs_server = true,
        },
        {
                .name = "Stop-VM",
                .synopsis = "Shuts a VM down through its guest, or turns it off with -TurnOff.",
                .example = "vmctl Stop-VM web -TurnOff",
                .params = stop_vm_params,
                .n_params = G_N_ELEMENTS(stop_vm_params),
                .handler = handle_stop_vm,
                .needs_server = true,
        },
        {
                .name = "Suspend-VM",
                .synopsis = "Pauses a running VM: its processors stop, its memory stays.",
                .example = "vmctl Suspend-VM web",
                .params = vm_only_params,
                .n_params = G_N_ELEMENTS(vm_only_params),
                .handler = handle_suspend_vm,
                .needs_server = true,
        },
        {
                .name = "Save-VM",
                .synopsis = "Saves a running or paused VM's whole state to a file and ends it; Start-VM "
                            "continues from where it was.",
                .example = "vmctl Save-VM web",
                .params = vm_only_params,
                .n_params = G_N_ELEMENTS(vm_only_params),
                .handler = handle_save_vm,
                .needs_server = true,
        },
        {
                .name = "Move-VM",
                .synopsis =
                        "Moves a running VM to another vmmsd host over mutual TLS, printing its progress: "
                        "saved here, restored paused there, committed, resumed there; on any failure "
                        "before the commit it continues here.",
                .example = "vmctl Move-VM web -DestinationHost hostb:7443 -MaximumDowntime 50ms",
                .params = move_vm_params,
                .n_params = G_N_ELEMENTS(move_vm_params),
                .handler = handle_move_vm,
                .needs_server = true,
        },
        {
                .name = "Stop-VMMigration",
                .synopsis = "Cancels a VM's move that has not been committed: the VM keeps running here and "
                            "the destination discards what it received.",
                .example = "vmctl Stop-VMMigration web",
                .params = vm_only_params,
                .n_params = G_N_ELEMENTS(vm_only_params),
                .handler = handle_stop_vm_migration,
                .needs_server = true,
        },
        {
                .name = "Compare-VM",
                .synopsis = "Asks another vmmsd host whether it could take the VM now (processor "
                            "compatibility, name, memory) and lists what differs; moves nothing.",
                .example = "vmctl Compare-VM web -DestinationHost hostb:7443",
                .params = compare_vm_params,
                .n_params = G_N_ELEMENTS(compare_vm_params),
                .handler = handle_compare_vm,
                .needs_server = true,
        },
        {
                .name = "Checkpoint-VM",
                .synopsis = "Takes a checkpoint: a running or paused VM's whole state (it runs on), or an "
                            "off VM's settings.",
                .example = "vmctl Checkpoint-VM web -SnapshotName before-upgrade",
                .params = checkpoint_vm_params,
                .n_params = G_N_ELEMENTS(checkpoint_vm_params),
                .handler = handle_checkpoint_vm,
                .needs_server = true,
        },
        {
                .name = "Get-VMSnapshot",
                .synopsis = "Lists a VM's checkpoints: name, when taken, the VM's state then, and size.",
                .example = "vmctl Get-VMSnapshot web",
                .params = get_snapshot_params,
                .n_params = G_N_ELEMENTS(get_snapshot_params),
                .handler = handle_get_vm_snapshot,
                .needs_server = true,
        },
        {
                .name = "Restore-VMSnapshot",
                .synopsis = "Returns a VM to a checkpoint: its settings and, for a running one, its memory "
                            "and state (the current run is turned off).",
                .example = "vmctl Restore-VMSnapshot web -Name before-upgrade",
                .params = snapshot_ref_params,
                .n_params = G_N_ELEMENTS(snapshot_ref_params),
                .handler = handle_restore_vm_snapshot,
                .needs_server = true,
        },
        {
                .name = "Remove-VMSnapshot",
                .synopsis = "Deletes a VM's checkpoint and its saved state.",
                .example = "vmctl Remove-VMSnapshot web -Name before-upgrade",
                .params = snapshot_ref_params,
                .n_params = G_N_ELEMENTS(snapshot_ref_params),
                .handler = handle_remove_vm_snapshot,
                .needs_server = true,
        },
        {
                .name = "Resume-VM",
                .synopsis = "Resumes a paused VM.",
                .example = "vmctl Resume-VM web",
                .params = vm_only_params,
                .n_params = G_N_ELEMENTS(vm_only_params),
                .handler = handle_resume_vm,
                .needs_server = true,
        },
        {
                .name = "Add-VMHardDiskDrive",
                .synopsis = "Attaches a disk image to an off libvirt VM (qcow2 without a backing file, or "
                            "raw); the guest sees it as a virtio disk.",
                .example = "vmctl Add-VMHardDiskDrive deb -Path data.qcow2",
                .params = hard_disk_drive_params,
                .n_params = G_N_ELEMENTS(hard_disk_drive_params),
                .handler = handle_add_vm_hard_disk_drive,
                .needs_server = true,
        },
        {
                .name = "Get-VMHardDiskDrive",
                .synopsis = "Lists the disk images attached to VMs (the boot disk, VHDPath, is Get-VM's).",
                .example = "vmctl Get-VMHardDiskDrive deb",
                .params = get_vm_settings_params,
                .n_params = G_N_ELEMENTS(get_vm_settings_params),
                .handler = handle_get_vm_hard_disk_drive,
                .needs_server = true,
        },
        {
                .name = "Remove-VMHardDiskDrive",
                .synopsis = "Detaches a disk image from an off libvirt VM (the file stays).",
                .example = "vmctl Remove-VMHardDiskDrive deb -Path data.qcow2",
                .params = hard_disk_drive_params,
                .n_params = G_N_ELEMENTS(hard_disk_drive_params),
                .handler = handle_remove_vm_hard_disk_drive,
                .needs_server = true,
        },
        {
                .name = "Add-VMNetworkAdapter",
                .synopsis = "Adds a virtio network adapter on a libvirt network to an off libvirt VM.",
                .example = "vmctl Add-VMNetworkAdapter deb -SwitchName default",
                .params = add_network_adapter_params,
                .n_params = G_N_ELEMENTS(add_network_adapter_params),
                .handler = handle_add_vm_network_adapter,
                .needs_server = true,
        },
        {
                .name = "Get-VMNetworkAdapter",
                .synopsis = "Lists VMs' network adapters: name, switch (libvirt network) and MAC address.",
                .example = "vmctl Get-VMNetworkAdapter deb",
                .params = get_vm_settings_params,
                .n_params = G_N_ELEMENTS(get_vm_settings_params),
                .handler = handle_get_vm_network_adapter,
                .needs_server = true,
        },
        {
                .name = "Remove-VMNetworkAdapter",
                .synopsis = "Removes a network adapter, by name, from an off libvirt VM.",
                .example = "vmctl Remove-VMNetworkAdapter deb -Name \"Network Adapter\"",
                .params = remove_network_adapter_params,
                .n_params = G_N_ELEMENTS(remove_network_adapter_params),
                .handler = handle_remove_vm_network_adapter,
                .needs_server = true,
        },
        {
                .name = "Get-VMProcessor",
                .synopsis = "Lists VMs' processor settings.",
                .example = "vmctl Get-VMProcessor web",
                .params = get_vm_settings_params,
                .n_params = G_N_ELEMENTS(get_vm_settings_params),
                .handler = handle_get_vm_processor,
                .needs_server = true,
        },
        {
                .name = "Set-VMProcessor",
                .synopsis = "Changes a VM's processor settings; only the ones given change.",
                .example = "vmctl Set-VMProcessor web -Reserve 10 -Maximum 75 -RelativeWeight 200",
                .params = set_processor_params,
                .n_params = G_N_ELEMENTS(set_processor_params),
                .handler = handle_set_vm_processor,
                .needs_server = true,
        },
        {
                .name = "Get-VMMemory",
                .synopsis = "Lists VMs' memory settings.",
                .example = "vmctl Get-VMMemory web",
                .params = get_vm_settings_params,
                .n_params = G_N_ELEMENTS(get_vm_settings_params),
                .handler = handle_get_vm_memory,
                .needs_server = true,
        },
        {
                .name = "Set-VMMemory",
                .synopsis = "Changes a VM's memory settings; only the ones given change.",
                .example = "vmctl Set-VMMemory web -DynamicMemoryEnabled true -MinimumBytes 256MB "
                           "-MaximumBytes 2GB -Buffer 20 "
                           "-Priority 80",
                .params = set_memory_params,
                .n_params = G_N_ELEMENTS(set_memory_params),
                .handler = handle_set_vm_memory,
                .needs_server = true,
        },
        {
                .name = "Set-VM",
                .synopsis = "Changes a VM's notes, automatic start action, workload or boot parameters.",
                .example = "vmctl Set-VM web -Notes 'front end' -AutomaticStartAction Start",
                .params = set_vm_params,
                .n_params = G_N_ELEMENTS(set_vm_params),
                .handler = handle_set_vm,
                .needs_server = true,
        },
        {
                .name = "Rename-VM",
                .synopsis = "Gives a VM a new name; its UUID stays.",
                .example = "vmctl Rename-VM web -NewName web2",
                .params = rename_vm_params,
                .n_params = G_N_ELEMENTS(rename_vm_params),
                .handler = handle_set_vm,
                .needs_server = true,
        },
        {
                .name = "Get-VMHost",
                .synopsis = "Shows the host: logical processors, memory pool, VM counts, CPU reservation.",
                .example = "vmctl Get-VMHost",
                .params = no_params,
                .n_params = G_N_ELEMENTS(no_params),
                .handler = handle_get_vm_host,
                .needs_server = true,
        },
        {
                .name = "Get-ClusterNode",
                .synopsis = "Lists the cluster's hosts as etcd has them: state (Up, Down, Paused), address, "
                            "VMs, memory, free memory, CPU load and the last lease renewal.",
                .example = "vmctl Get-ClusterNode",
                .params = no_params,
                .n_params = G_N_ELEMENTS(no_params),
                .handler = handle_get_cluster_node,
                .needs_server = true,
        },
        {
                .name = "Suspend-ClusterNode",
                .synopsis =
                        "Pauses a cluster host: it takes no VMs; with -Drain it live-migrates its running "
                        "VMs to other hosts, one at a time, and vmctl waits until none is left.",
                .example = "vmctl Suspend-ClusterNode hosta -Drain",
                .params = suspend_cluster_node_params,
                .n_params = G_N_ELEMENTS(suspend_cluster_node_params),
                .handler = handle_suspend_cluster_node,
                .needs_server = true,
        },
        {
                .name = "Resume-ClusterNode",
                .synopsis = "Ends a host's pause: it takes VMs again (its moved VMs stay where they went).",
                .example = "vmctl Resume-ClusterNode hosta",
                .params = resume_cluster_node_params,
                .n_params = G_N_ELEMENTS(resume_cluster_node_params),
                .handler = handle_resume_cluster_node,
                .needs_server = true,
        },
        {
                .name = "Get-Cluster",
                .synopsis = "Shows the cluster-wide settings as etcd has them: auto-balance, its Average "
                            "Pressure threshold and CPU wait threshold, who set them and when.",
                .example = "vmctl Get-Cluster",
                .params = no_params,
                .n_params = G_N_ELEMENTS(no_params),
                .handler = handle_get_cluster,
                .needs_server = true,
        },
        {
                .name = "Set-Cluster",
                .synopsis = "Changes cluster-wide settings for every host (the leader acts on them): "
                            "auto-balance on or off and its thresholds; only the parameters given change.",
                .example = "vmctl Set-Cluster -AutoBalance $true -AutoBalanceThreshold 100",
                .params = set_cluster_params,
                .n_params = G_N_ELEMENTS(set_cluster_params),
                .handler = handle_set_cluster,
                .needs_server = true,
        },
        {
                .name = "Get-VMHostHealth",
                .synopsis = "Shows the signs of an over-committed host (memory short, pressure over 100, "
                            "paging, VPs waiting, LPs busy), each with its counter, value, threshold, window "
                            "and advice.",
                .example = "vmctl Get-VMHostHealth",
                .params = no_params,
                .n_params = G_N_ELEMENTS(no_params),
                .handler = handle_get_vm_host_health,
                .needs_server = true,
        },
        {
                .name = "Get-Counter",
                .synopsis = "Reads performance counters, as Path and Value rows.",
                .example = "vmctl Get-Counter '\\Hyper-V Hypervisor Logical Processor(*)\\% Total Run Time'",
                .params = get_counter_params,
                .n_params = G_N_ELEMENTS(get_counter_params),
                .handler = handle_get_counter,
                .needs_server = true,
        },
        {
                .name = "Get-VMEvent",
                .synopsis = "Shows the event log (created, state changes, settings, worker exits, errors).",
                .example = "vmctl Get-VMEvent -VMName web -Newest 20 -Wait",
                .params = get_event_params,
                .n_params = G_N_ELEMENTS(get_event_params),
                .handler = handle_get_vm_event,
                .needs_server = true,
        },
        {
                .name = "Connect-VM",
                .synopsis = "Shows the guest's console and follows it, until Ctrl-C.",
                .example = "vmctl Connect-VM web -Tail 50",
                .params = connect_vm_params,
                .n_params = G_N_ELEMENTS(connect_vm_params),
                .handler = handle_connect_vm,
                .needs_server = true,
        },
        {
                .name = "Get-Help",
                .synopsis = "Explains a verb, or lists them.",
                .example = "vmctl Get-Help Set-VMMemory",
                .params = get_help_params,
                .n_params = G_N_ELEMENTS(get_help_params),
                .handler = handle_get_help,
                .needs_server = false,
        },
};

const VmctlVerb *vmctl_verbs(size_t *ret_n_verbs)
{
        *ret_n_verbs = G_N_ELEMENTS(verbs);
        return verbs;
}

const VmctlVerb *vmctl_verb_find(const char *name)
{
        for (size_t i = 0; i < G_N_ELEMENTS(verbs); i++)
                if (g_ascii_strcasecmp(verbs[i].name, name) == 0)
                        return &verbs[i];
        return NULL;
}

int vmctl_verb_parse(const VmctlVerb *verb, int argc, char **argv, VmctlArgs **ret_args, char **ret_error)
{
        return vmctl_args_parse(verb->params, verb->n_params, argc, argv, false, ret_args, NULL, ret_error);
}

static bool is_common_param(const VmctlParam *p)
{
        for (size_t i = 0; i < G_N_ELEMENTS(common_params); i++)
                if (strcmp(common_params[i].name, p->name) == 0)
                        return true;
        return false;
}

static char *param_value_hint(const VmctlParam *p)
{
        switch (p->type) {
        case VMCTL_PARAM_STRING:
                return g_strdup(" <string>");
        case VMCTL_PARAM_LIST:
                return g_strdup(" <string[]>");
        case VMCTL_PARAM_CHOICE: {
                g_autofree char *choices = g_strjoinv("|", (char **)p->choices);

                return g_strdup_printf(" <%s>", choices);
        }
        case VMCTL_PARAM_UINT:
                if (p->max)
                        return g_strdup_printf(" <%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT ">", p->min,
                                               p->max);
                return g_strdup(" <N>");
        case VMCTL_PARAM_SIZE:
                if (p->max) {
                        g_autofree char *min = vmctl_format_size(p->min), *max = vmctl_format_size(p->max);

                        return g_strdup_printf(" <size %s-%s>", min, max);
                }
                return g_strdup(" <size>");
        case VMCTL_PARAM_BOOL:
                return g_strdup(" <$true|$false>");
        case VMCTL_PARAM_SWITCH:
                break;
        }
        return g_strdup("");
}

static void append_syntax(GString *out, const VmctlVerb *verb)
{
        g_string_append(out, verb->name);
        for (size_t i = 0; i < verb->n_params; i++) {
                const VmctlParam *p = &verb->params[i];
                g_autofree char *hint = param_value_hint(p);

                if (is_common_param(p))
                        continue;
                if (p->positional)
                        g_string_append_printf(out, p->required ? " [-%s]%s" : " [[-%s]%s]", p->name, hint);
                else
                        g_string_append_printf(out, p->required ? " -%s%s" : " [-%s%s]", p->name, hint);
        }
        g_string_append(out,
                        " [-Json] [-Server <target>] [-CertificateFile <pem>] [-ClientCertificateFile <pem> "
                        "-ClientKeyFile <pem>]");
}

static void append_param_help(GString *out, const VmctlParam *p)
{
        g_autofree char *hint = param_value_hint(p);

        g_string_append_printf(out, "    -%s%s\n        %s", p->name, hint, p->help);
        if (p->has_default) {
                g_autofree char *value = p->type == VMCTL_PARAM_SIZE
                                                 ? vmctl_format_size(p->default_value)
                                                 : g_strdup_printf("%" G_GUINT64_FORMAT, p->default_value);

                g_string_append_printf(out, " Default %s.", value);
        }
        if (p->type == VMCTL_PARAM_STRING && p->max)
                g_string_append_printf(out, " At most %" G_GUINT64_FORMAT " bytes.", p->max);
        if (p->required)
                g_string_append(out, " Required.");
        if (p->positional)
                g_string_append(out, " May be given without its name, first.");
        g_string_append(out, "\n\n");
}

static void append_verb_help(GString *out, const VmctlVerb *verb)
{
        bool own_params = false;

        g_string_append_printf(out, "NAME\n    %s\n\nSYNOPSIS\n    %s\n\nSYNTAX\n    ", verb->name,
                               verb->synopsis);
        append_syntax(out, verb);
        g_string_append(out, "\n\nPARAMETERS\n");
        for (size_t i = 0; i < verb->n_params; i++)
                if (!is_common_param(&verb->params[i])) {
                        append_param_help(out, &verb->params[i]);
                        own_params = true;
                }
        if (!own_params)
                g_string_append_printf(out, "    %s takes only the common parameters, below.\n\n",
                                       verb->name);
        g_string_append(out, "COMMON PARAMETERS\n");
        for (size_t i = 0; i < G_N_ELEMENTS(common_params); i++)
                append_param_help(out, &common_params[i]);
        g_string_append_printf(out, "EXAMPLE\n    %s\n", verb->example);
}

/* PowerShell's names for the types Get-Help shows. */
static const char *param_type_name(const VmctlParam *p)
{
        switch (p->type) {
        case VMCTL_PARAM_STRING:
        case VMCTL_PARAM_CHOICE:
                return "String";
        case VMCTL_PARAM_LIST:
                return "String[]";
        case VMCTL_PARAM_UINT:
        case VMCTL_PARAM_SIZE:
                return "UInt64";
        case VMCTL_PARAM_BOOL:
                return "Boolean";
        case VMCTL_PARAM_SWITCH:
                break;
        }
        return "SwitchParameter";
}

static JsonObject *param_json(const VmctlParam *p)
{
        JsonObject *param = json_object_new();

        json_object_set_string_member(param, "name", p->name);
        json_object_set_string_member(param, "type", param_type_name(p));
        if (p->type == VMCTL_PARAM_SIZE)
                json_object_set_string_member(param, "unit", "bytes");
        json_object_set_string_member(param, "description", p->help);
        json_object_set_boolean_member(param, "required", p->required);
        json_object_set_boolean_member(param, "positional", p->positional);
        json_object_set_boolean_member(param, "common", is_common_param(p));
        if (p->has_default)
                json_object_set_int_member(param, "default", (gint64)p->default_value);
        if ((p->type == VMCTL_PARAM_UINT || p->type == VMCTL_PARAM_SIZE) && p->max) {
                json_object_set_int_member(param, "minimum", (gint64)p->min);
                json_object_set_int_member(param, "maximum", (gint64)p->max);
        }
        if (p->type == VMCTL_PARAM_STRING && p->max)
                json_object_set_int_member(param, "maxLength", (gint64)p->max);
        if (p->type == VMCTL_PARAM_CHOICE) {
                JsonArray *choices = json_array_new();

                for (const char *const *c = p->choices; *c; c++)
                        json_array_add_string_element(choices, *c);
                json_object_set_array_member(param, "choices", choices);
        }
        return param;
}

/* Get-Help -Json of one verb: what the text shows, as fields. */
static JsonNode *verb_help_json(const VmctlVerb *verb)
{
        g_autoptr(JsonObject) help = json_object_new();
        g_autoptr(GString) syntax = g_string_new(NULL);
        JsonArray *params = json_array_new(), *examples = json_array_new();

        append_syntax(syntax, verb);
        for (size_t i = 0; i < verb->n_params; i++)
                json_array_add_object_element(params, param_json(&verb->params[i]));
        json_array_add_string_element(examples, verb->example);
        json_object_set_string_member(help, "name", verb->name);
        json_object_set_string_member(help, "synopsis", verb->synopsis);
        json_object_set_string_member(help, "syntax", syntax->str);
        json_object_set_array_member(help, "parameters", params);
        json_object_set_array_member(help, "examples", examples);
        return json_node_init_object(json_node_alloc(), help);
}

/* Get-Help -Json without a verb: each verb's name and synopsis. */
static JsonNode *verb_list_json(void)
{
        g_autoptr(JsonArray) list = json_array_new();

        for (size_t i = 0; i < G_N_ELEMENTS(verbs); i++) {
                JsonObject *verb = json_object_new();

                json_object_set_string_member(verb, "name", verbs[i].name);
                json_object_set_string_member(verb, "synopsis", verbs[i].synopsis);
                json_array_add_object_element(list, verb);
        }
        return json_node_init_array(json_node_alloc(), list);
}

static void append_verb_list(GString *out)
{
        g_string_append(out, "vmctl: manages vmms virtual machines through vmmsd.\n\n"
                             "Usage: vmctl [-Server <target>] [-Json] <Verb> [-Parameter value]...\n\n");
        for (size_t i = 0; i < G_N_ELEMENTS(verbs); i++)
                g_string_append_printf(out, "  %-16s %s\n", verbs[i].name, verbs[i].synopsis);
        g_string_append(
                out,
                "\nVerbs and parameter names are case-insensitive; a parameter may be shortened while it\n"
                "stays unambiguous, and written -Name value or -Name:value. Sizes: 512MB, 2GB or bytes.\n"
                "Booleans: $true $false true false 1 0. vmctl Get-Help <Verb> explains a verb.\n"
                "Exit status: 0 done, 1 vmmsd refused or failed, 2 bad command line, 3 vmmsd unreachable.\n");
}

static int handle_get_help(VmctlContext *ctx)
{
        g_autoptr(GString) out = g_string_new(NULL);
        const char *name = arg_text(ctx, "Name");
        const VmctlVerb *verb = NULL;

        if (name) {
                verb = vmctl_verb_find(name);
                if (!verb)
                        return fail(ctx, -EINVAL, "unknown verb '%s'; vmctl -? lists the verbs", name);
        }
        if (ctx->json) {
                g_autoptr(JsonNode) help = verb ? verb_help_json(verb) : verb_list_json();

                vmctl_json_append_node(out, help, true);
        } else if (verb) {
                append_verb_help(out, verb);
        } else {
                append_verb_list(out);
        }
        emit(ctx, out);
        return 0;
}

static int exit_status(int r)
{
        switch (r) {
        case 0:
                return VMCTL_EXIT_OK;
        case -EINVAL:
                return VMCTL_EXIT_USAGE;
        case -ENOTCONN:
                return VMCTL_EXIT_UNREACHABLE;
        default:
                return VMCTL_EXIT_FAILED;
        }
}

/* The channel for -Server and the certificates, the client config file, or the default socket. -EINVAL
 * (a usage error) when they do not fit together or a file cannot be read. */
static int connect_client(VmctlContext *ctx, VmctlClient **ret_client)
{
        VmctlConnectOptions options = {
                .server = arg_text(ctx, "Server"),
                .ca_file = arg_text(ctx, "CertificateFile"),
                .cert_file = arg_text(ctx, "ClientCertificateFile"),
                .key_file = arg_text(ctx, "ClientKeyFile"),
        };
        g_autofree char *config = vmctl_rpc_config_path(g_getenv("VMCTL_CONFIG"), g_get_user_config_dir());
        g_autofree char *target = NULL, *why = NULL;
        g_auto(VmctlTls) tls = {0};

        if (vmctl_rpc_resolve(&options, geteuid() == 0, g_getenv("VMMS_SOCKET"), g_get_user_runtime_dir(),
                              config, &target, &tls, &why) < 0)
                return fail(ctx, -EINVAL, "%s", why);
        if (vmctl_client_new(target, &tls, ret_client) < 0)
                return fail(ctx, -EINVAL, "-Server '%s' is not an address vmctl can use", target);
        return 0;
}

/* Splits argv into common options before the verb, the verb, and the rest; binds them all against the
 * verb's table as if the leading options had come after it. */
static int parse_command_line(int argc, char **argv, const VmctlVerb **ret_verb, VmctlArgs **ret_args,
                              bool *ret_list_verbs, char **ret_error)
{
        g_autoptr(VmctlArgs) leading = NULL;
        g_autoptr(GPtrArray) rest = g_ptr_array_new();
        g_autofree char *error = NULL;
        const VmctlVerb *verb;
        int consumed, r;

        r = vmctl_args_parse(common_params, G_N_ELEMENTS(common_params), argc - 1, argv + 1, true, &leading,
                             &consumed, ret_error);
        if (r < 0)
                return r;
        if (consumed == argc - 1) {
                if (!leading->help) {
                        *ret_error = g_strdup("no verb given; vmctl -? lists the verbs");
                        return -EINVAL;
                }
                *ret_list_verbs = true;
                return 0;
        }
        verb = vmctl_verb_find(argv[1 + consumed]);
        if (!verb) {
                *ret_error =
                        g_strdup_printf("unknown verb '%s'; vmctl -? lists the verbs", argv[1 + consumed]);
                return -EINVAL;
        }
        for (int i = 1; i <= consumed; i++)
                g_ptr_array_add(rest, argv[i]);
        for (int i = 2 + consumed; i < argc; i++)
                g_ptr_array_add(rest, argv[i]);
        if (leading->help)
                g_ptr_array_add(rest, (gpointer) "-?");
        r = vmctl_verb_parse(verb, (int)rest->len, (char **)rest->pdata, ret_args, &error);
        if (r < 0) {
                *ret_error = g_strdup_printf("%s: %s", verb->name, error);
                return r;
        }
        *ret_verb = verb;
        return 0;
}

int vmctl_main(int argc, char **argv, FILE *out, FILE *err)
{
        g_autoptr(VmctlArgs) args = NULL;
        g_autoptr(VmctlClient) client = NULL;
        g_autofree char *error = NULL;
        const VmctlVerb *verb = NULL;
        VmctlContext ctx = {.out = out};
        bool list_verbs = false;
        int r;

        r = parse_command_line(argc, argv, &verb, &args, &list_verbs, &error);
        if (r < 0) {
                fprintf(err, "vmctl: %s\n", error);
                return VMCTL_EXIT_USAGE;
        }
        if (list_verbs || args->help) {
                g_autoptr(GString) help = g_string_new(NULL);

                if (list_verbs) {
                        append_verb_list(help);
                } else if (vmctl_args_get(args, "Json")->flag) {
                        g_autoptr(JsonNode) node = verb_help_json(verb);

                        vmctl_json_append_node(help, node, true);
                } else {
                        append_verb_help(help, verb);
                }
                fputs(help->str, out);
                return VMCTL_EXIT_OK;
        }
        ctx.verb = verb;
        ctx.args = args;
        ctx.json = arg_flag(&ctx, "Json");
        if (verb->needs_server) {
                r = connect_client(&ctx, &client);
                if (r < 0)
                        goto done;
                ctx.client = client;
        }
        r = verb->handler(&ctx);
done:
        fflush(out);
        if (r < 0) {
                if (r == -ENOTCONN)
                        fprintf(err, "vmctl: %s\n", ctx.error);
                else
                        fprintf(err, "vmctl: %s: %s\n", verb->name, ctx.error ? ctx.error : g_strerror(-r));
        }
        g_free(ctx.error);
        return exit_status(r);
}
