/* Guest -> vmwp: a hostile guest driving the worker's VMBus host, the Dynamic Memory and
 * storage VSPs (vmwp-vmbus.c, vmwp-ring.c, vmwp-dm.c, vmwp-storage.c) through guest RAM
 * and posted messages, as test-vmwp-vmbus.c's scripted guest does. The input is a
 * program: each step is an opcode and its arguments (see enum Op).
 *
 * Checks beyond the sanitizers: the worker writes guest RAM only in the message page and
 * the rings of open channels (pages the guest never named are read-only to it, so a
 * stray write faults; named ones are compared with what the guest left there), and a
 * flood of guest news is always worked off in bounded time. */
#include <errno.h>
#include <glib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "vmwp-dm.h"
#include "vmwp-storage.h"
#include "vmwp-vmbus.h"

#define VISIBLE (256u << 10)
#define MAXIMUM (512u << 10)
#define PAGES (MAXIMUM / HV_PAGE_SIZE)
#define CHANNELS 2u /* 1: dynamic memory, 2: storage */
#define STEPS_MAX 64
#define PROCESS_ROUNDS_MAX 10000

enum Op {
        OP_INITIATE,
        OP_OPEN,
        OP_MESSAGE, /* raw bytes as a posted message */
        OP_SEND,    /* a packet into a channel's guest-to-host ring */
        OP_SIGNAL,
        OP_SCRIBBLE, /* a u32 anywhere in guest RAM: ring headers, data, the message page */
        OP_ADJUST,   /* vmmsd's MemoryAdjust */
        OP_DRAIN,    /* the guest takes its messages and packets */
        OP_COUNT,
};

typedef struct GuestChannel {
        uint32_t ring_pages;
        uint64_t pfns[HV_VMBUS_OPEN_MAX_PAGES];
} GuestChannel;

typedef struct World {
        uint8_t *ram;
        uint8_t *shadow; /* guest RAM as the guest left it */
        VmwpGuestRam guest_ram;
        GHashTable *ballooned; /* pfn + 1 */
        VmwpVmbus *bus;
        VmwpDm *dm;
        VmwpStorage *storage;
        uint64_t message_pfn;
        GuestChannel channels[CHANNELS + 1];
        bool granted[PAGES];   /* named in an OPEN since the worker's last turn */
        bool candidate[PAGES]; /* ever named as the message page or in an OPEN */
} World;

static char *paging_path;

/* ---- hvd, faked as test-vmwp-vmbus.c does ---- */

static int fake_signal(void *userdata)
{
        (void)userdata;
        return 0;
}

static int fake_hot_add(void *userdata, uint64_t bytes, HvClientMemory *ret, char **ret_error)
{
        World *w = userdata;

        if (bytes > w->guest_ram.maximum_bytes - w->guest_ram.visible_bytes) {
                *ret_error = g_strdup("past the maximum");
                return -ENOSPC;
        }
        *ret = (HvClientMemory){.visible_bytes = w->guest_ram.visible_bytes + bytes};
        return 0;
}

static int fake_pages(World *w, bool to_balloon, const uint64_t *pfns, size_t n, bool *ret_accepted)
{
        for (size_t i = 0; i < n; i++) {
                gpointer key = GSIZE_TO_POINTER(pfns[i] + 1);
                bool ok = pfns[i] < w->guest_ram.visible_bytes / HV_PAGE_SIZE &&
                          g_hash_table_contains(w->ballooned, key) != to_balloon;

                ret_accepted[i] = ok;
                if (ok && to_balloon)
                        g_hash_table_add(w->ballooned, key);
                else if (ok)
                        g_hash_table_remove(w->ballooned, key);
        }
        return 0;
}

static int fake_balloon(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                        HvClientPageTally *tally, char **ret_error)
{
        (void)tally;
        (void)ret_error;
        return fake_pages(userdata, true, pfns, n, ret_accepted);
}

static int fake_unballoon(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                          HvClientPageTally *tally, char **ret_error)
{
        (void)tally;
        (void)ret_error;
        return fake_pages(userdata, false, pfns, n, ret_accepted);
}

static int fake_memory_get(void *userdata, HvClientMemory *ret)
{
        World *w = userdata;
        uint64_t ballooned = g_hash_table_size(w->ballooned) * HV_PAGE_SIZE;

        *ret = (HvClientMemory){.visible_bytes = w->guest_ram.visible_bytes,
                                .assigned_bytes = w->guest_ram.visible_bytes - ballooned,
                                .ballooned_bytes = ballooned};
        return 0;
}

static const VmwpDmHvOps fake_hv_ops = {
        .hot_add = fake_hot_add,
        .balloon = fake_balloon,
        .unballoon = fake_unballoon,
        .memory_get = fake_memory_get,
};

/* ---- The guest ---- */

static uint8_t *page(World *w, uint64_t pfn)
{
        return w->ram + pfn * HV_PAGE_SIZE;
}

/* The guest named the page (message page, ring page): the worker may come to use it. */
static void name_page(World *w, uint64_t pfn)
{
        if (pfn >= PAGES || w->candidate[pfn])
                return;
        w->candidate[pfn] = true;
        FUZZ_CHECK(mprotect(page(w, pfn), HV_PAGE_SIZE, PROT_READ | PROT_WRITE) == 0);
}

/* Posts a message; the pages it names (INITIATE's message page, OPEN's ring pages),
 * however it came to be, become ones the worker may write. */
static void post(World *w, const void *data, size_t len)
{
        uint32_t type = 0;

        memcpy(&type, data, MIN(len, sizeof(type)));
        if (type == HV_VMBUS_MSG_INITIATE && len >= sizeof(struct hv_vmbus_initiate)) {
                struct hv_vmbus_initiate m;

                memcpy(&m, data, sizeof(m));
                if (m.message_page_gpa % HV_PAGE_SIZE == 0) {
                        w->message_pfn = m.message_page_gpa / HV_PAGE_SIZE;
                        name_page(w, w->message_pfn);
                }
        } else if (type == HV_VMBUS_MSG_OPEN) {
                struct hv_vmbus_open m = {0};

                memcpy(&m, data, MIN(len, sizeof(m)));
                for (uint32_t i = 0; i < HV_VMBUS_OPEN_MAX_PAGES; i++) {
                        if (m.pfns[i] < PAGES) {
                                w->granted[m.pfns[i]] = true;
                                name_page(w, m.pfns[i]);
                        }
                }
        }
        vmwp_vmbus_queue_message(w->bus, data, len);
}

/* A guest-side ring over the pages it named in OPEN: `to_host` is the one it writes. */
static int guest_ring(World *w, uint32_t channel, bool to_host, VmwpRing *ret)
{
        const GuestChannel *gc = &w->channels[channel];
        uint8_t *pages[HV_VMBUS_OPEN_MAX_PAGES];

        if (gc->ring_pages < 2)
                return -ENOTCONN;
        for (uint32_t i = 0; i < gc->ring_pages; i++) {
                uint64_t pfn = gc->pfns[(to_host ? 0 : gc->ring_pages) + i];

                if (pfn >= PAGES || !w->candidate[pfn]) /* the guest writes only pages it named */
                        return -ERANGE;
                pages[i] = page(w, pfn);
        }
        return vmwp_ring_init(ret, pages, gc->ring_pages, !to_host);
}

static void op_initiate(World *w, FuzzInput *in)
{
        uint8_t flags = fuzz_u8(in);
        struct hv_vmbus_initiate m = {.type = HV_VMBUS_MSG_INITIATE, .version = HV_VMBUS_VERSION};

        m.message_page_gpa = (flags & 0x80) ? fuzz_u64(in) : (uint64_t)fuzz_u8(in) * HV_PAGE_SIZE;
        if (flags & 0x40)
                m.version = fuzz_u32(in);
        post(w, &m, sizeof(m));
}

static void op_open(World *w, FuzzInput *in)
{
        struct hv_vmbus_open m = {.type = HV_VMBUS_MSG_OPEN};
        uint8_t flags = fuzz_u8(in);
        uint64_t base = fuzz_u8(in);
        size_t len = sizeof(m);

        m.channel_id = fuzz_u8(in) % (CHANNELS + 2);
        m.ring_pages = fuzz_u8(in) % 16;
        for (uint32_t i = 0; i < HV_VMBUS_OPEN_MAX_PAGES; i++)
                m.pfns[i] = (flags & 0x80) ? fuzz_u8(in) : base + i;
        if (flags & 0x40)
                len = fuzz_u8(in) % (sizeof(m) + 1);
        if (m.channel_id >= 1 && m.channel_id <= CHANNELS && m.ring_pages <= HV_VMBUS_OPEN_MAX_PAGES / 2) {
                w->channels[m.channel_id].ring_pages = m.ring_pages;
                memcpy(w->channels[m.channel_id].pfns, m.pfns, sizeof(m.pfns));
        }
        post(w, &m, len);
}

static void op_message(World *w, FuzzInput *in)
{
        uint8_t buf[256];
        size_t len = fuzz_u8(in);

        fuzz_take(in, buf, len);
        post(w, buf, len);
}

static void op_send(World *w, FuzzInput *in)
{
        uint32_t channel = fuzz_u8(in) % CHANNELS + 1;
        uint16_t type = fuzz_u16(in);
        uint32_t len = fuzz_u16(in) % (HV_PACKET_MAX + 1);
        g_autofree uint8_t *payload = g_malloc(len + 1);
        VmwpSegment seg = {payload, len};
        VmwpRing ring;

        fuzz_take(in, payload, len);
        if (guest_ring(w, channel, true, &ring) == 0)
                (void)vmwp_ring_write(&ring, type, &seg, 1);
}

static void op_scribble(World *w, FuzzInput *in)
{
        uint64_t pfn = fuzz_u8(in) % (VISIBLE / HV_PAGE_SIZE);
        uint32_t offset = fuzz_u16(in) % HV_PAGE_SIZE & ~3u;
        uint32_t value = fuzz_u32(in);

        if (!w->candidate[pfn])
                FUZZ_CHECK(mprotect(page(w, pfn), HV_PAGE_SIZE, PROT_READ | PROT_WRITE) == 0);
        memcpy(page(w, pfn) + offset, &value, sizeof(value));
        if (!w->candidate[pfn])
                FUZZ_CHECK(mprotect(page(w, pfn), HV_PAGE_SIZE, PROT_READ) == 0);
}

static void op_adjust(World *w, FuzzInput *in)
{
        g_autofree char *why = NULL;
        int8_t units = (int8_t)fuzz_u8(in);

        (void)vmwp_dm_adjust(w->dm, (int64_t)units * (int64_t)VMWP_DM_UNIT_BYTES, &why);
}

static void op_drain(World *w)
{
        VmwpPacket *packet = g_new(VmwpPacket, 1);

        if (w->message_pfn < PAGES && w->candidate[w->message_pfn]) {
                struct hv_message *slots = (struct hv_message *)page(w, w->message_pfn);

                for (uint32_t i = 0; i < HV_MESSAGE_SLOTS; i++)
                        slots[i].type = HV_VMBUS_MSG_NONE;
        }
        for (uint32_t c = 1; c <= CHANNELS; c++) {
                VmwpRing ring;

                if (guest_ring(w, c, false, &ring) < 0)
                        continue;
                for (int n = 0; n < 64 && vmwp_ring_read(&ring, packet) == 0; n++)
                        ;
        }
        g_free(packet);
}

/* Not instrumented, with page_copy: they run over all of guest RAM at every step. */
FUZZ_UNINSTRUMENTED static void page_copy(uint8_t *dst, const uint8_t *src)
{
        for (size_t i = 0; i < HV_PAGE_SIZE; i += sizeof(uint64_t))
                *(uint64_t *)(dst + i) = *(const uint64_t *)(src + i);
}

FUZZ_UNINSTRUMENTED static bool page_equal(const uint8_t *a, const uint8_t *b)
{
        const uint64_t *x = (const uint64_t *)a, *y = (const uint64_t *)b;
        uint64_t diff = 0;

        for (size_t i = 0; i < HV_PAGE_SIZE / sizeof(uint64_t); i++)
                diff |= x[i] ^ y[i];
        return diff == 0;
}

/* The worker handles what the guest did; it may write only pages it may use. Pages
 * the guest never named are read-only; the named ones are checked here. */
static void host_turn(World *w)
{
        bool in_use[PAGES];
        int rounds = 0;

        for (uint64_t pfn = 0; pfn < PAGES; pfn++) {
                in_use[pfn] = w->candidate[pfn] && vmwp_vmbus_page_in_use(w->bus, pfn);
                if (w->candidate[pfn]) /* what is there now is the guest's doing */
                        page_copy(w->shadow + pfn * HV_PAGE_SIZE, page(w, pfn));
        }
        while (vmwp_vmbus_process(w->bus))
                FUZZ_CHECK(++rounds < PROCESS_ROUNDS_MAX);
        for (uint64_t pfn = 0; pfn < PAGES; pfn++) {
                if (!w->candidate[pfn] || page_equal(page(w, pfn), w->shadow + pfn * HV_PAGE_SIZE))
                        continue;
                FUZZ_CHECK(in_use[pfn] || w->granted[pfn] || vmwp_vmbus_page_in_use(w->bus, pfn));
        }
        memset(w->granted, 0, sizeof(w->granted));
}

static void world_init(World *w)
{
        g_autofree char *why = NULL;

        memset(w, 0, sizeof(*w));
        w->ram = mmap(NULL, MAXIMUM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        FUZZ_CHECK(w->ram != MAP_FAILED);
        FUZZ_CHECK(mprotect(w->ram, MAXIMUM, PROT_READ) == 0); /* until the guest names a page */
        w->shadow = g_malloc(MAXIMUM);
        w->guest_ram = (VmwpGuestRam){.ram = w->ram, .maximum_bytes = MAXIMUM, .visible_bytes = VISIBLE};
        w->ballooned = g_hash_table_new(g_direct_hash, NULL);
        FUZZ_CHECK(vmwp_vmbus_new(&w->guest_ram, fake_signal, w, &w->bus) == 0);
        FUZZ_CHECK(vmwp_dm_new(w->bus, &w->guest_ram, &fake_hv_ops, w, &w->dm) == 0);
        FUZZ_CHECK(vmwp_storage_new(w->bus, paging_path, 8, &w->storage, &why) == 0);
}

static void world_clear(World *w)
{
        vmwp_storage_free(w->storage);
        vmwp_dm_free(w->dm);
        vmwp_vmbus_free(w->bus);
        g_hash_table_unref(w->ballooned);
        g_free(w->shadow);
        munmap(w->ram, MAXIMUM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        FuzzInput in = {data, size};
        World w;

        if (!paging_path) {
                g_autofree char *dir = g_dir_make_tmp("fuzz-vmbus-XXXXXX", NULL);

                FUZZ_CHECK(dir);
                paging_path = g_build_filename(dir, "disk.paging", NULL);
                fuzz_quiet_logs();
        }
        world_init(&w);
        for (int step = 0; step < STEPS_MAX && in.size > 0; step++) {
                switch (fuzz_u8(&in) % OP_COUNT) {
                case OP_INITIATE:
                        op_initiate(&w, &in);
                        break;
                case OP_OPEN:
                        op_open(&w, &in);
                        break;
                case OP_MESSAGE:
                        op_message(&w, &in);
                        break;
                case OP_SEND:
                        op_send(&w, &in);
                        break;
                case OP_SIGNAL:
                        vmwp_vmbus_queue_signal(w.bus, fuzz_u8(&in) % (CHANNELS + 2));
                        break;
                case OP_SCRIBBLE:
                        op_scribble(&w, &in);
                        break;
                case OP_ADJUST:
                        op_adjust(&w, &in);
                        break;
                case OP_DRAIN:
                        op_drain(&w);
                        break;
                }
                host_turn(&w);
        }
        world_clear(&w);
        return 0;
}
