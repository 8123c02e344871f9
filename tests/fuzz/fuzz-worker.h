/* What the targets that feed a whole worker share (fuzz-migrate-in.c, fuzz-save-file.c):
 * a real hvd (the build's, one per fuzzing process, killed when it ends), a worker of
 * a fixed geometry built through vmwp_worker_new as vmwp-main.c builds it, and the
 * checksum fix-up that lets the fuzzer mutate what lies behind the CRCs.
 *
 * The geometry is that of the VM tests/fuzz/capture-seeds.py captures the seeds from:
 * FUZZ_VPS VPs, FUZZ_MEMORY bytes, the default paging disk (FUZZ_PAGING). */
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"
#include "vmwp-save.h"
#include "vmwp-section.h"
#include "vmwp-worker.h"

#define FUZZ_VPS 2u
#define FUZZ_MEMORY (32ull << 20)
#define FUZZ_PAGING (4 * FUZZ_MEMORY) /* vmwp's default: VMWP_PAGING_DEFAULT_FACTOR */
/* The input's first byte: what the harness leaves as the input says. */
#define FUZZ_KEEP_CHECKSUMS 0x01u /* otherwise every CRC is made right */
#define FUZZ_KEEP_SIZES 0x02u     /* a file: otherwise its header's size and count are made right */

typedef struct FuzzWorld {
        char *dir;
        char *hvd_socket;
        char *paging_path;
        pid_t hvd;
} FuzzWorld;

static FuzzWorld fuzz_world;

static void fuzz_world_end(void)
{
        if (fuzz_world.hvd > 0) {
                kill(fuzz_world.hvd, SIGTERM);
                waitpid(fuzz_world.hvd, NULL, 0);
        }
        if (fuzz_world.dir) {
                g_autofree char *log = g_build_filename(fuzz_world.dir, "hvd.log", NULL);

                (void)unlink(fuzz_world.paging_path);
                (void)unlink(fuzz_world.hvd_socket);
                (void)unlink(log);
                (void)rmdir(fuzz_world.dir);
        }
}

/* Starts hvd (FUZZ_HVD_PATH, from meson) on a private socket, once per process. */
static void fuzz_world_start(void)
{
        g_autofree char *log = NULL;
        pid_t parent = getpid();

        if (fuzz_world.hvd)
                return;
        fuzz_quiet_logs();
        fuzz_world.dir = g_dir_make_tmp("fuzz-worker-XXXXXX", NULL);
        FUZZ_CHECK(fuzz_world.dir);
        fuzz_world.hvd_socket = g_build_filename(fuzz_world.dir, "hvd.sock", NULL);
        fuzz_world.paging_path = g_build_filename(fuzz_world.dir, "paging", NULL);
        log = g_build_filename(fuzz_world.dir, "hvd.log", NULL);
        fuzz_world.hvd = fork();
        FUZZ_CHECK(fuzz_world.hvd >= 0);
        if (fuzz_world.hvd == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                execl(FUZZ_HVD_PATH, "hvd", "--socket", fuzz_world.hvd_socket, "--memory", "512MB", "--lps",
                      "1", (char *)NULL);
                _exit(127);
        }
        atexit(fuzz_world_end);
        for (int i = 0; i < 1000 && access(fuzz_world.hvd_socket, F_OK) < 0; i++)
                g_usleep(10000);
        FUZZ_CHECK(access(fuzz_world.hvd_socket, F_OK) == 0);
}

/* hvd still runs: what the worker passed on from the input (VP state, ballooned pages,
 * the reference time) must never bring the host down. */
static void fuzz_world_check(void)
{
        FUZZ_CHECK(waitpid(fuzz_world.hvd, NULL, WNOHANG) == 0);
}

/* A worker for the VM the seeds come from, connected to hvd, with no partition yet. */
static VmwpWorker *fuzz_worker_new(void)
{
        VmwpConfig config = {
                .name = (char *)"fuzz",
                .vp_count = FUZZ_VPS,
                .startup_bytes = FUZZ_MEMORY,
                .maximum_bytes = FUZZ_MEMORY,
                .workload = (char *)"idle",
                .hvd_socket = fuzz_world.hvd_socket,
                .paging_file = fuzz_world.paging_path,
                .paging_bytes = FUZZ_PAGING,
        };
        g_autofree char *why = NULL;
        VmwpWorker *w = NULL;

        FUZZ_CHECK(vmwp_worker_new(&config, &w, &why) == 0);
        return w;
}

/* Makes every CRC of the section format in `data` right (and, for a file, the header's
 * size and section count), walking sections as far as their lengths reach, so the
 * fuzzer's mutations get past the checksums to the checks behind them. */
static void fuzz_fix_checksums(uint8_t *data, size_t size, bool file, uint8_t flags)
{
        uint64_t at = VMWP_FORMAT_HEADER_BYTES;
        uint32_t sections = 0;

        if (size < VMWP_FORMAT_HEADER_BYTES)
                return;
        while (size - at >= VMWP_SECTION_HEADER_BYTES) {
                uint8_t *sh = data + at;
                uint64_t len = vmwp_le64(sh + 8), room = size - at - VMWP_SECTION_HEADER_BYTES;

                if (!(flags & FUZZ_KEEP_CHECKSUMS)) {
                        vmwp_put_le32(sh + 16,
                                      vmwp_crc32(vmwp_crc32(0, NULL, 0), sh + VMWP_SECTION_HEADER_BYTES,
                                                 (size_t)MIN(len, room)));
                        vmwp_put_le32(sh + 20, vmwp_crc32(0, sh, 20));
                }
                sections++;
                if (len > room || VMWP_SECTION_PAD(len) > room)
                        break;
                at += VMWP_SECTION_HEADER_BYTES + VMWP_SECTION_PAD(len);
        }
        if (file && !(flags & FUZZ_KEEP_SIZES)) {
                vmwp_put_le64(data + 16, size);
                vmwp_put_le32(data + 24, sections);
        }
        if (!(flags & FUZZ_KEEP_CHECKSUMS))
                vmwp_put_le32(data + 28, vmwp_crc32(0, data, 28));
}

/* The input (after its flags byte), fixed up, in a file of its own: the fd, at 0. */
static int fuzz_input_file(const uint8_t *data, size_t size, bool file, char **ret_path)
{
        g_autofree uint8_t *copy = NULL;
        uint8_t flags = size ? data[0] : 0;
        char *path;
        int fd;

        data = size ? data + 1 : data;
        size = size ? size - 1 : 0;
        copy = g_memdup2(data, size);
        fuzz_fix_checksums(copy, size, file, flags);
        path = g_build_filename(fuzz_world.dir, file ? "input.vmrs" : "input.stream", NULL);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        FUZZ_CHECK(fd >= 0);
        FUZZ_CHECK(size == 0 || write(fd, copy, size) == (ssize_t)size);
        FUZZ_CHECK(lseek(fd, 0, SEEK_SET) == 0);
        *ret_path = path;
        return fd;
}
