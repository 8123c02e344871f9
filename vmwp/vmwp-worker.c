/* The VM worker's core: partition, guest image, boot data, VPs, console. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv-client.h"
#include "vmwp-elf.h"
#include "vmwp-migrate.h"
#include "vmwp-save.h"
#include "vmwp-storage.h"
#include "vmwp-vmbus.h"
#include "vmwp-worker.h"

struct VmwpWorker {
        VmwpConfig config;
        HvClient *hv;
        uint64_t partition_id;
        bool partition_live;
        int ram_fd;
        uint8_t *ram;
        uint64_t ram_bytes;
        FILE *console_log;
        VmwpGuestRam guest_ram; /* what VMBus and the DM VSP see of RAM */
        VmwpVmbus *vmbus;
        VmwpDm *dm;
        VmwpStorage *storage;
        char *paging_path;
        uint32_t vps_stopped;
        bool crashed;
        bool paused;
        char *stop_reason;
        VmwpStoppedFn on_stopped;
        void *on_stopped_userdata;
        VmwpDmStatusFn on_memory_status;
        void *on_memory_status_userdata;
        /* Live migration (vmwp-migrate.h). */
        VmwpMigration *migration;
        VmwpMigrationPhase phase;
        bool migration_vm_was_paused;
        VmwpMigrationEndedFn on_migration_ended;
        void *on_migration_ended_userdata;
        VmwpIncomingResult incoming;
};

static const char *const workloads[] = {"idle", "cpu", "memsoak", "cache"};

void vmwp_config_clear(VmwpConfig *config)
{
        g_free(config->name);
        g_free(config->workload);
        g_free(config->cmdline_extra);
        g_free(config->guest_path);
        g_free(config->hvd_socket);
        g_free(config->console_log);
        g_free(config->paging_file);
        memset(config, 0, sizeof(*config));
}

/* The guest's boot command line: the workload and the extra parameters. */
int vmwp_config_cmdline(const VmwpConfig *config, char **ret_cmdline, char **ret_error)
{
        const char *workload = config->workload ? config->workload : "idle";
        g_autofree char *cmdline = NULL;
        bool known = false;

        for (size_t i = 0; i < G_N_ELEMENTS(workloads); i++)
                known = known || strcmp(workload, workloads[i]) == 0;
        if (!known) {
                *ret_error =
                        g_strdup_printf("workload '%s' is not one of idle, cpu, memsoak, cache", workload);
                return -EINVAL;
        }
        cmdline = g_strdup_printf("workload=%s%s%s", workload, config->cmdline_extra ? " " : "",
                                  config->cmdline_extra ? config->cmdline_extra : "");
        if (strlen(cmdline) >= HV_BOOT_CMDLINE_MAX) {
                *ret_error = g_strdup_printf("boot parameters are %zu bytes; the limit is %d",
                                             strlen(cmdline), HV_BOOT_CMDLINE_MAX - 1);
                return -E2BIG;
        }
        *ret_cmdline = g_steal_pointer(&cmdline);
        return 0;
}

static void write_console(VmwpWorker *w, const uint8_t *data, size_t len)
{
        if (w->console_log) {
                fwrite(data, 1, len, w->console_log);
                fflush(w->console_log);
        }
        if (w->config.console_stdout) {
                fwrite(data, 1, len, stdout);
                fflush(stdout);
        }
}

static void on_hv_event(const Vmms__Hv__Event *event, void *userdata)
{
        VmwpWorker *w = userdata;

        if (event->partition_id != w->partition_id)
                return;
        if (event->body_case == VMMS__HV__EVENT__BODY_GUEST_MESSAGE && w->vmbus) {
                vmwp_vmbus_queue_message(w->vmbus, event->guest_message->data.data,
                                         event->guest_message->data.len);
        } else if (event->body_case == VMMS__HV__EVENT__BODY_GUEST_SIGNAL && w->vmbus) {
                vmwp_vmbus_queue_signal(w->vmbus, event->guest_signal->connection_id);
        } else if (event->body_case == VMMS__HV__EVENT__BODY_CONSOLE) {
                write_console(w, event->console->data.data, event->console->data.len);
        } else if (event->body_case == VMMS__HV__EVENT__BODY_VP_STOPPED) {
                const char *reason = event->vp_stopped->reason;

                fprintf(stderr, "vmwp: %s: vp %u stopped: %s\n", w->config.name, event->vp_stopped->vp_index,
                        reason);
                if (!g_str_has_prefix(reason, "guest halted"))
                        w->crashed = true;
                if (!w->stop_reason || (w->crashed && !g_str_has_prefix(reason, "guest halted"))) {
                        g_free(w->stop_reason);
                        w->stop_reason = g_strdup(reason); /* the first, or the first fault */
                }
                if (++w->vps_stopped == w->config.vp_count && w->on_stopped)
                        w->on_stopped(w, w->crashed, w->on_stopped_userdata);
        }
}

int vmwp_worker_new(const VmwpConfig *config, VmwpWorker **ret, char **ret_error)
{
        g_autoptr(VmwpWorker) w = g_new0(VmwpWorker, 1);
        g_autofree char *cmdline = NULL;
        int r;

        w->ram_fd = -1;
        w->config = (VmwpConfig){
                .name = g_strdup(config->name),
                .vp_count = config->vp_count,
                .startup_bytes = config->startup_bytes,
                .maximum_bytes = config->maximum_bytes ? config->maximum_bytes : config->startup_bytes,
                .workload = g_strdup(config->workload),
                .cmdline_extra = g_strdup(config->cmdline_extra),
                .guest_path = g_strdup(config->guest_path),
                .hvd_socket = g_strdup(config->hvd_socket),
                .console_log = g_strdup(config->console_log),
                .paging_file = g_strdup(config->paging_file),
                .paging_bytes = config->paging_bytes,
                .console_stdout = config->console_stdout,
                .reserve_pct = config->reserve_pct,
                .maximum_pct = config->maximum_pct,
                .relative_weight = config->relative_weight,
                .concurrent_vps = config->concurrent_vps,
                .cpu_compatibility = config->cpu_compatibility,
        };
        r = vmwp_config_cmdline(&w->config, &cmdline, ret_error);
        if (r < 0)
                return r;
        if (w->config.console_log) {
                w->console_log = fopen(w->config.console_log, "ae");
                if (!w->console_log) {
                        r = -errno;
                        *ret_error = g_strdup_printf("cannot open console log %s: %s", w->config.console_log,
                                                     g_strerror(-r));
                        return r;
                }
        }
        r = hv_client_connect(w->config.hvd_socket, &w->hv);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot connect to hvd at %s: %s", w->config.hvd_socket,
                                             g_strerror(-r));
                return r;
        }
        hv_client_set_event_handler(w->hv, on_hv_event, w);
        *ret = g_steal_pointer(&w);
        return 0;
}

void vmwp_worker_free(VmwpWorker *w)
{
        if (!w)
                return;
        if (w->partition_live)
                (void)vmwp_worker_stop(w);
        vmwp_migration_free(w->migration);
        vmwp_dm_free(w->dm);
        vmwp_storage_free(w->storage);
        vmwp_vmbus_free(w->vmbus);
        g_free(w->paging_path);
        if (w->ram)
                munmap(w->ram, w->ram_bytes);
        if (w->ram_fd >= 0)
                close(w->ram_fd);
        hv_client_free(w->hv);
        g_free(w->stop_reason);
        if (w->console_log)
                fclose(w->console_log);
        vmwp_config_clear(&w->config);
        g_free(w);
}

static int load_guest(VmwpWorker *w, uint64_t *ret_entry, char **ret_error)
{
        g_autoptr(GMappedFile) image = NULL;
        g_autoptr(GError) error = NULL;

        image = g_mapped_file_new(w->config.guest_path, FALSE, &error);
        if (!image) {
                *ret_error = g_strdup_printf("cannot read guest image: %s", error->message);
                return -ENOENT;
        }
        return vmwp_elf_load((const uint8_t *)g_mapped_file_get_contents(image),
                             g_mapped_file_get_length(image), w->ram, w->config.startup_bytes,
                             HV_GUEST_KERNEL_BASE, ret_entry, ret_error);
}

static void write_boot_info(VmwpWorker *w, const char *cmdline)
{
        struct hv_boot_info info = {
                .magic = HV_BOOT_INFO_MAGIC,
                .abi_version = HV_ABI_VERSION,
                .vp_count = w->config.vp_count,
                .visible_bytes = w->config.startup_bytes,
                .maximum_bytes = w->config.maximum_bytes,
        };

        g_strlcpy(info.cmdline, cmdline, sizeof(info.cmdline));
        memcpy(w->ram + HV_BOOT_INFO_GPA, &info, sizeof(info));
}

/* ---- The hvd side of the VSPs ---- */

static int signal_guest(void *userdata)
{
        VmwpWorker *w = userdata;

        /* A partition already destroyed has no guest left to tell. */
        return w->partition_live ? hv_client_partition_signal(w->hv, w->partition_id, 0) : 0;
}

static int dm_hot_add(void *userdata, uint64_t bytes, HvClientMemory *ret_memory, char **ret_error)
{
        VmwpWorker *w = userdata;
        int r = hv_client_partition_hot_add(w->hv, w->partition_id, bytes, ret_memory);

        if (r < 0)
                *ret_error = g_strdup(hv_client_last_error(w->hv));
        return r;
}

static int dm_pages(VmwpWorker *w, bool balloon, const uint64_t *pfns, size_t n, bool *ret_accepted,
                    HvClientPageTally *ret_tally, char **ret_error)
{
        int r = balloon ? hv_client_partition_balloon(w->hv, w->partition_id, pfns, n, ret_accepted,
                                                      ret_tally, NULL)
                        : hv_client_partition_unballoon(w->hv, w->partition_id, pfns, n, ret_accepted,
                                                        ret_tally, NULL);

        if (r < 0)
                *ret_error = g_strdup(hv_client_last_error(w->hv));
        /* Punched (or handed back, zero) pages are news to a migration's destination:
         * the sender finds them holes and sends them as discards. */
        for (size_t i = 0; r >= 0 && i < n; i++)
                if (!ret_accepted || ret_accepted[i])
                        vmwp_guest_ram_mark(&w->guest_ram, pfns[i] * HV_PAGE_SIZE, HV_PAGE_SIZE);
        return r;
}

static int dm_balloon(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                      HvClientPageTally *ret_tally, char **ret_error)
{
        return dm_pages(userdata, true, pfns, n, ret_accepted, ret_tally, ret_error);
}

static int dm_unballoon(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                        HvClientPageTally *ret_tally, char **ret_error)
{
        return dm_pages(userdata, false, pfns, n, ret_accepted, ret_tally, ret_error);
}

static int dm_memory_get(void *userdata, HvClientMemory *ret_memory)
{
        VmwpWorker *w = userdata;

        return w->partition_live ? hv_client_partition_memory_get(w->hv, w->partition_id, ret_memory)
                                 : -ESRCH;
}

static const VmwpDmHvOps dm_hv_ops = {
        .hot_add = dm_hot_add,
        .balloon = dm_balloon,
        .unballoon = dm_unballoon,
        .memory_get = dm_memory_get,
};

/* The paging file: as asked, else beside the console log, else in /tmp. */
static char *paging_path(const VmwpConfig *config)
{
        g_autofree char *dir = NULL;

        if (config->paging_file)
                return g_strdup(config->paging_file);
        if (config->console_log) {
                dir = g_path_get_dirname(config->console_log);
                return g_strdup_printf("%s/%s.paging", dir, config->name);
        }
        return g_strdup_printf("%s/vmms-%s-%d.paging", g_get_tmp_dir(), config->name, (int)getpid());
}

/* VMBus and its devices exist before the guest runs: its first message may come at once. */
static int start_devices(VmwpWorker *w, char **ret_error)
{
        uint64_t paging_bytes = w->config.paging_bytes ? w->config.paging_bytes
                                                       : w->config.startup_bytes * VMWP_PAGING_DEFAULT_FACTOR;
        uint64_t slots = MAX(paging_bytes / HV_PAGE_SIZE, 1);
        int r;

        w->guest_ram = (VmwpGuestRam){
                .ram = w->ram,
                .maximum_bytes = w->config.maximum_bytes,
                .visible_bytes = w->config.startup_bytes,
        };
        r = vmwp_vmbus_new(&w->guest_ram, signal_guest, w, &w->vmbus);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot start VMBus: %s", g_strerror(-r));
                return r;
        }
        r = vmwp_dm_new(w->vmbus, &w->guest_ram, &dm_hv_ops, w, &w->dm);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot start the Dynamic Memory device: %s", g_strerror(-r));
                return r;
        }
        vmwp_dm_set_status_handler(w->dm, w->on_memory_status, w->on_memory_status_userdata);
        w->paging_path = paging_path(&w->config);
        return vmwp_storage_new(w->vmbus, w->paging_path, slots, &w->storage, ret_error);
}

static int fail(VmwpWorker *w, char **ret_error, int r, const char *what)
{
        *ret_error = g_strdup_printf("%s: %s", what, hv_client_last_error(w->hv));
        return r;
}

int vmwp_worker_start(VmwpWorker *w, char **ret_error)
{
        HvClientProcessor processor = {.reserve_pct = w->config.reserve_pct,
                                       .maximum_pct = w->config.maximum_pct,
                                       .relative_weight = w->config.relative_weight,
                                       .concurrent_vps = w->config.concurrent_vps,
                                       .cpu_compatibility = w->config.cpu_compatibility};
        g_autofree char *cmdline = NULL;
        uint64_t entry;
        int r;

        r = vmwp_config_cmdline(&w->config, &cmdline, ret_error);
        if (r < 0)
                return r;
        r = hv_client_partition_create(w->hv, w->config.name, w->config.vp_count, w->config.startup_bytes,
                                       w->config.maximum_bytes, &processor, &w->partition_id, &w->ram_fd);
        if (r < 0)
                return fail(w, ret_error, r, "hvd refused the partition");
        w->partition_live = true;
        w->ram_bytes = w->config.maximum_bytes;
        w->ram = mmap(NULL, w->ram_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, w->ram_fd, 0);
        if (w->ram == MAP_FAILED) {
                w->ram = NULL;
                r = -errno;
                *ret_error = g_strdup_printf("cannot map guest RAM: %s", g_strerror(-r));
                return r;
        }
        r = load_guest(w, &entry, ret_error);
        if (r < 0)
                return r;
        write_boot_info(w, cmdline);
        r = start_devices(w, ret_error);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < w->config.vp_count; i++) {
                r = hv_client_vp_start(w->hv, w->partition_id, i, entry, HV_BOOT_STACK_TOP(i), i,
                                       HV_BOOT_INFO_GPA);
                if (r < 0)
                        return fail(w, ret_error, r, "hvd refused to start a VP");
        }
        return 0;
}

int vmwp_worker_stop(VmwpWorker *w)
{
        int r;

        if (!w->partition_live)
                return 0;
        (void)hv_client_dispatch(w->hv); /* the console's last lines */
        r = hv_client_partition_destroy(w->hv, w->partition_id);
        w->partition_live = false;
        return r;
}

void vmwp_worker_set_stopped_handler(VmwpWorker *w, VmwpStoppedFn fn, void *userdata)
{
        w->on_stopped = fn;
        w->on_stopped_userdata = userdata;
}

uint64_t vmwp_worker_partition_id(VmwpWorker *w)
{
        return w->partition_id;
}

bool vmwp_worker_paused(VmwpWorker *w)
{
        return w->paused;
}

const char *vmwp_worker_stop_reason(VmwpWorker *w)
{
        return w->stop_reason ? w->stop_reason : "";
}

int vmwp_worker_request_shutdown(VmwpWorker *w)
{
        struct hv_boot_info *info;

        if (!w->partition_live || !w->ram)
                return -ESRCH;
        info = (struct hv_boot_info *)(w->ram + HV_BOOT_INFO_GPA);
        __atomic_or_fetch(&info->host_request, HV_HOST_REQUEST_SHUTDOWN, __ATOMIC_SEQ_CST);
        return hv_client_partition_signal(w->hv, w->partition_id, 0);
}

int vmwp_worker_pause(VmwpWorker *w, bool paused, char **ret_error)
{
        int r;

        if (!w->partition_live) {
                *ret_error = g_strdup("the VM has no partition");
                return -ESRCH;
        }
        r = hv_client_partition_pause(w->hv, w->partition_id, paused);
        if (r < 0) {
                *ret_error = g_strdup(hv_client_last_error(w->hv));
                return r;
        }
        w->paused = paused;
        return 0;
}

int vmwp_worker_fd(VmwpWorker *w)
{
        return hv_client_fd(w->hv);
}

int vmwp_worker_dispatch(VmwpWorker *w)
{
        return hv_client_dispatch(w->hv);
}

int vmwp_worker_set_processor(VmwpWorker *w, uint32_t reserve_pct, uint32_t maximum_pct,
                              uint32_t relative_weight, char **ret_error)
{
        HvClientProcessor processor = {
                .reserve_pct = reserve_pct, .maximum_pct = maximum_pct, .relative_weight = relative_weight};
        int r;

        if (!w->partition_live) {
                *ret_error = g_strdup("the VM has no partition");
                return -ESRCH;
        }
        r = hv_client_partition_set_processor(w->hv, w->partition_id, &processor);
        if (r < 0)
                return fail(w, ret_error, r, "hvd refused the processor settings");
        w->config.reserve_pct = reserve_pct;
        w->config.maximum_pct = maximum_pct;
        w->config.relative_weight = relative_weight;
        return 0;
}

int vmwp_worker_memory_adjust(VmwpWorker *w, int64_t delta_bytes, char **ret_error)
{
        if (!w->partition_live || !w->dm) {
                *ret_error = g_strdup("the VM has no partition");
                return -ESRCH;
        }
        return vmwp_dm_adjust(w->dm, delta_bytes, ret_error);
}

void vmwp_worker_set_memory_status_handler(VmwpWorker *w, VmwpDmStatusFn fn, void *userdata)
{
        w->on_memory_status = fn;
        w->on_memory_status_userdata = userdata;
        if (w->dm)
                vmwp_dm_set_status_handler(w->dm, fn, userdata);
}

int vmwp_worker_memory_status(VmwpWorker *w, VmwpMemoryStatus *ret)
{
        if (!w->partition_live || !w->dm)
                return -ESRCH;
        vmwp_dm_status(w->dm, ret);
        return 0;
}

/* ---- Save-VM ---- */

static VmwpSaveParts save_parts(VmwpWorker *w)
{
        return (VmwpSaveParts){
                .hv = w->hv,
                .partition_id = w->partition_id,
                .ram_fd = w->ram_fd,
                .ram = w->ram,
                .guest_ram = &w->guest_ram,
                .vmbus = w->vmbus,
                .dm = w->dm,
                .paging_path = w->paging_path,
                .vp_count = w->config.vp_count,
        };
}

int vmwp_worker_save(VmwpWorker *w, const char *path, bool keep_running, VmwpSaveResult *ret,
                     char **ret_error)
{
        VmwpSaveParts parts;
        bool was_paused = w->paused;
        int r;

        if (!w->partition_live || !w->vmbus) {
                *ret_error = g_strdup("the VM has no partition");
                return -ESRCH;
        }
        r = vmwp_worker_pause(w, true, ret_error);
        if (r < 0)
                return r;
        /* What the guest said before it stopped is handled first: its notes still in
         * the socket, then VMBus's queue (bounded: the guest is paused, nothing new comes). */
        (void)hv_client_dispatch(w->hv);
        for (int i = 0; i < 64 && vmwp_vmbus_process(w->vmbus); i++)
                ;
        parts = save_parts(w);
        r = vmwp_save_write(&parts, path, ret, ret_error);
        if ((r < 0 || keep_running) && !was_paused) {
                g_autofree char *ignored = NULL;

                (void)vmwp_worker_pause(w, false, &ignored);
        }
        return r;
}

/* A paused partition for a saved or incoming VM of the worker's geometry, `visible`
 * bytes of RAM, with its devices. */
static int create_restoring_partition(VmwpWorker *w, uint64_t visible, char **ret_error)
{
        HvClientProcessor processor = {.reserve_pct = w->config.reserve_pct,
                                       .maximum_pct = w->config.maximum_pct,
                                       .relative_weight = w->config.relative_weight,
                                       .concurrent_vps = w->config.concurrent_vps,
                                       .cpu_compatibility = w->config.cpu_compatibility,
                                       .restoring = true};
        int r;

        r = hv_client_partition_create(w->hv, w->config.name, w->config.vp_count, visible,
                                       w->config.maximum_bytes, &processor, &w->partition_id, &w->ram_fd);
        if (r < 0)
                return fail(w, ret_error, r, "hvd refused the partition");
        w->partition_live = true;
        w->paused = true;
        w->ram_bytes = w->config.maximum_bytes;
        w->ram = mmap(NULL, w->ram_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, w->ram_fd, 0);
        if (w->ram == MAP_FAILED) {
                w->ram = NULL;
                r = -errno;
                *ret_error = g_strdup_printf("cannot map guest RAM: %s", g_strerror(-r));
                return r;
        }
        r = start_devices(w, ret_error);
        if (r < 0)
                return r;
        w->guest_ram.visible_bytes = visible;
        return 0;
}

int vmwp_worker_restore(VmwpWorker *w, const char *path, bool paused, char **ret_error)
{
        g_autoptr(GArray) sections = NULL;
        g_autofree char *why = NULL;
        VmwpSaveParts parts;
        uint64_t maximum, visible;
        uint32_t vps;
        int fd, r;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot open the saved state %s: %s", path, g_strerror(-r));
                return r;
        }
        r = vmwp_save_check(fd, w->config.vp_count, &sections, &why);
        if (r >= 0)
                r = vmwp_save_read_config(fd, sections, &vps, &maximum, &visible, &why);
        if (r >= 0 && (vps != w->config.vp_count || maximum != w->config.maximum_bytes)) {
                why = g_strdup_printf("the saved VM has %u VPs and %" G_GUINT64_FORMAT
                                      " bytes maximum; its definition %u and %" G_GUINT64_FORMAT,
                                      vps, maximum, w->config.vp_count, w->config.maximum_bytes);
                r = -EBADMSG;
        }
        if (r < 0) {
                close(fd);
                *ret_error = g_strdup_printf("the saved state %s is unusable: %s", path,
                                             why ? why : g_strerror(-r));
                return r;
        }
        r = create_restoring_partition(w, visible, &why);
        if (r < 0) {
                /* The geometry is the file's: hvd may refuse what the checks let through. */
                close(fd);
                *ret_error =
                        g_strdup_printf("cannot restore %s (%" G_GUINT64_FORMAT " bytes of RAM visible): %s",
                                        path, visible, why ? why : g_strerror(-r));
                return r;
        }
        parts = save_parts(w);
        r = vmwp_save_load(&parts, fd, sections, &why);
        close(fd);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot restore %s: %s", path, why ? why : g_strerror(-r));
                return r;
        }
        return paused ? 0 : vmwp_worker_pause(w, false, ret_error);
}

/* ---- Live migration (vmwp-migrate.h; worker.proto's contract) ---- */

static int migrate_pause(void *userdata, bool paused, char **ret_error)
{
        return vmwp_worker_pause(userdata, paused, ret_error);
}

/* `percent` below the VM's own cap (reserve lowered with it when it would exceed it);
 * 0: the VM's own settings. The worker's config keeps the VM's own. */
static int migrate_throttle(void *userdata, uint32_t percent, char **ret_error)
{
        VmwpWorker *w = userdata;
        uint32_t base = w->config.maximum_pct ? w->config.maximum_pct : 100;
        uint32_t maximum = MAX(1u, base * (100 - MIN(percent, 99u)) / 100);
        HvClientProcessor processor = {.reserve_pct = MIN(w->config.reserve_pct, maximum),
                                       .maximum_pct = percent ? maximum : w->config.maximum_pct,
                                       .relative_weight = w->config.relative_weight};
        int r = hv_client_partition_set_processor(w->hv, w->partition_id, &processor);

        if (r < 0)
                return fail(w, ret_error, r, "hvd refused the migration's throttle");
        return 0;
}

static gboolean free_migration(gpointer userdata)
{
        VmwpWorker *w = userdata;

        if (w->phase == VMWP_MIGRATION_NONE)
                g_clear_pointer(&w->migration, vmwp_migration_free);
        return G_SOURCE_REMOVE;
}

static void migrate_ended(void *userdata, bool ok, bool cancelled, const char *reason,
                          const VmwpMigrateDone *done)
{
        VmwpWorker *w = userdata;

        w->phase = ok ? VMWP_MIGRATION_OUT_DONE : VMWP_MIGRATION_NONE;
        if (!ok) /* the sender is still returning from this call: free it afterwards */
                g_idle_add(free_migration, w);
        if (w->on_migration_ended)
                w->on_migration_ended(w, ok, cancelled, reason, done, w->on_migration_ended_userdata);
}

static const VmwpMigrateWorkerOps migrate_ops = {
        .pause = migrate_pause,
        .throttle = migrate_throttle,
        .ended = migrate_ended,
};

void vmwp_worker_set_migration_handler(VmwpWorker *w, VmwpMigrationEndedFn fn, void *userdata)
{
        w->on_migration_ended = fn;
        w->on_migration_ended_userdata = userdata;
}

VmwpMigrationPhase vmwp_worker_migration_phase(VmwpWorker *w)
{
        return w->phase;
}

int vmwp_worker_migrate_out(VmwpWorker *w, int fd, const VmwpMigrateOptions *options, char **ret_error)
{
        VmwpSaveParts parts;
        int r;

        if (!w->partition_live || !w->vmbus) {
                close(fd);
                *ret_error = g_strdup("the VM has no partition");
                return -ESRCH;
        }
        if (w->phase != VMWP_MIGRATION_NONE || w->migration) {
                close(fd);
                *ret_error = g_strdup("a migration of this VM is under way");
                return -EBUSY;
        }
        parts = save_parts(w);
        w->migration_vm_was_paused = w->paused;
        r = vmwp_migration_start(&parts, fd, options, w->paused, &migrate_ops, w, &w->migration, ret_error);
        if (r < 0)
                return r;
        w->phase = VMWP_MIGRATION_OUT_PRECOPY;
        return 0;
}

void vmwp_worker_migration_progress(VmwpWorker *w, VmwpMigrateProgress *ret)
{
        if (w->migration)
                vmwp_migration_progress(w->migration, ret);
        else
                memset(ret, 0, sizeof(*ret));
}

int vmwp_worker_migrate_cancel(VmwpWorker *w, bool resume, char **ret_error)
{
        int r;

        if (w->phase == VMWP_MIGRATION_OUT_PRECOPY) {
                vmwp_migration_cancel(w->migration);
                return 0;
        }
        if (w->phase != VMWP_MIGRATION_OUT_DONE) {
                *ret_error = g_strdup("no outgoing migration to cancel");
                return -EINVAL;
        }
        r = vmwp_migration_abort(w->migration, resume ? false : w->migration_vm_was_paused, ret_error);
        if (r < 0)
                return r;
        w->phase = VMWP_MIGRATION_NONE;
        g_clear_pointer(&w->migration, vmwp_migration_free);
        return 0;
}

/* The destination: geometry from the stream, checked by the receiver against ours. */
static int incoming_prepare(void *userdata, uint64_t visible, VmwpSaveParts *ret_parts, char **ret_error)
{
        VmwpWorker *w = userdata;
        int r = create_restoring_partition(w, visible, ret_error);

        if (r < 0)
                return r;
        *ret_parts = save_parts(w);
        return 0;
}

int vmwp_worker_incoming(VmwpWorker *w, int fd, char **ret_error)
{
        g_autofree char *why = NULL;
        int r;

        r = vmwp_incoming_receive(fd, w->config.vp_count, w->config.maximum_bytes, incoming_prepare, w,
                                  &w->incoming, &why);
        close(fd);
        if (r < 0) {
                *ret_error = g_strdup_printf("incoming migration refused: %s", why ? why : g_strerror(-r));
                return r;
        }
        w->phase = VMWP_MIGRATION_INCOMING_DONE;
        return 0;
}

const VmwpIncomingResult *vmwp_worker_incoming_result(VmwpWorker *w)
{
        return &w->incoming;
}

void vmwp_worker_migration_resumed(VmwpWorker *w)
{
        if (w->phase == VMWP_MIGRATION_INCOMING_DONE)
                w->phase = VMWP_MIGRATION_NONE;
}
