/* Supervision of one VM worker (vmwp): spawning it, its control connection, and
 * learning when and why it exits. A worker outlives a vmmsd restart; the new vmmsd
 * attaches to it through its control socket. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "worker.pb-c.h"

typedef struct VmmsWorker VmmsWorker;

typedef struct VmmsWorkerCallbacks {
        /* The worker is up (on every connection, including after a re-attach). */
        void (*hello)(VmmsWorker *w, const Vmms__Worker__Hello *hello, void *userdata);
        void (*guest_stopped)(VmmsWorker *w, const char *reason, bool crashed, void *userdata);
        /* The guest's Dynamic Memory figures, about once a second. */
        void (*memory_status)(VmmsWorker *w, const Vmms__Worker__MemoryStatus *status, void *userdata);
        /* Live migration (worker.proto): any message of that part (MigrationProgress,
         * MigrationOutDone, MigrationOutFailed, IncomingDone), as received. */
        void (*migration)(VmmsWorker *w, const Vmms__Worker__Message *msg, void *userdata);
        /* Exactly once, when the worker is gone: `why` says how (exit status, signal,
         * or connection lost); `exit_code` is -1 when unknown. The worker may be freed
         * from the callback. */
        void (*exited)(VmmsWorker *w, const char *why, int exit_code, void *userdata);
} VmmsWorkerCallbacks;

typedef struct VmmsWorkerSpawn {
        const char *vmwp_path;
        const char *guest_path;
        const char *hvd_socket;
        const char *control_socket;
        const char *log_path;     /* the worker's stdout and stderr */
        const char *console_path; /* the guest console */
        const char *vm_id;
        const char *partition_name;
        uint32_t vp_count;
        uint64_t startup_bytes;
        uint64_t maximum_bytes;
        uint32_t reserve, maximum, relative_weight;
        bool cpu_compatibility; /* the normalized CPUID (vmwp --cpu-compatibility) */
        const char *workload;
        const char *boot_args;
        const char *paging_file;
        uint64_t paging_bytes;
        const char *restore_path; /* continue from this saved state instead of booting */
        bool restore_paused;      /* and stay paused until a Resume (a moved VM awaiting its commit) */
        int incoming_fd;          /* >= 0: read a live migration stream from it (--incoming-fd); -1: none */
} VmmsWorkerSpawn;

/* A reply from the worker: error 0 or a negative errno with a message. */
typedef void (*VmmsWorkerReplyFn)(int error, const char *message, void *userdata);

int vmms_worker_spawn(const VmmsWorkerSpawn *spawn, const VmmsWorkerCallbacks *callbacks, void *userdata,
                      VmmsWorker **ret, char **ret_error);
int vmms_worker_attach(const char *control_socket, int32_t pid, const VmmsWorkerCallbacks *callbacks,
                       void *userdata, VmmsWorker **ret);
void vmms_worker_free(VmmsWorker *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsWorker, vmms_worker_free)

int32_t vmms_worker_pid(VmmsWorker *w);
bool vmms_worker_connected(VmmsWorker *w);
/* Sends `req` (its id is set here); `fn` runs once with the reply, or with
 * -ECONNRESET if the worker goes away first. */
void vmms_worker_request(VmmsWorker *w, Vmms__Worker__Request *req, VmmsWorkerReplyFn fn, void *userdata);
/* The same, for a request whose reply carries more than an error (Save's SaveResult):
 * `reply` is NULL when the worker went away first. */
typedef void (*VmmsWorkerFullReplyFn)(int error, const char *message, const Vmms__Worker__Reply *reply,
                                      void *userdata);
void vmms_worker_request_full(VmmsWorker *w, Vmms__Worker__Request *req, VmmsWorkerFullReplyFn fn,
                              void *userdata);
/* The same, with `fd` passed along (SCM_RIGHTS; MigrateOut's stream). The caller keeps
 * its own copy of fd. */
void vmms_worker_request_fd(VmmsWorker *w, Vmms__Worker__Request *req, int fd, VmmsWorkerFullReplyFn fn,
                            void *userdata);
/* Why the worker exited: its Exiting message (worker.proto), else with read_log the
 * last line of its log (a start that failed before vmmsd connected); the log is never
 * read whole. */
char *vmms_worker_last_words(VmmsWorker *w, bool read_log);
/* Whether the worker said it exits because hvd went away. */
bool vmms_worker_lost_hypervisor(VmmsWorker *w);
void vmms_worker_kill(VmmsWorker *w);
