/* The processor a guest sees, and what makes two hosts' processors compatible.
 *
 * Under the Unicorn engine the guest's instruction set is not the host CPU's: TCG
 * implements the CPU model the engine was given (uc_ctl_set_cpu_model, qemu64 unless
 * hvd --cpu-model says otherwise) and gates instructions on that model's feature words,
 * and the engine version decides how faithfully. CPUID answers from the same model. So
 * what a running guest may have learned about its processor depends on (engine, engine
 * version, CPU model), and a guest moved to a host where any of them differs may find
 * an instruction it probed for missing, or its CPUID answers changed under it.
 *
 * A compatibility vector names all of that: the engine and its version, the model, the
 * CPUID table the guest reads (the leaves of hv_cpuid_vector_leaves, and a SHA-256 of
 * them so a glance says "same"), the guest ABI version (hv-abi.h) and hvd's root
 * protocol version. Two hosts may exchange a VM only when the VM's vectors on both are
 * equal field by field (vmms-compat.c lists the fields that differ).
 *
 * A partition created with cpu_compatibility (Set-VMProcessor
 * -CompatibilityForMigrationEnabled) reads a normalized CPUID instead: the baseline
 * below, the same on every host and engine build, and its vector says only the engine,
 * "any" version, the baseline's name and table. What the baseline offers is the x86-64
 * psABI's first level (x86-64-v1: FPU, TSC, CX8, CMOV, MMX, FXSR, SSE, SSE2, SYSCALL,
 * NX, LM) plus the paging features a 64-bit kernel needs (PSE, PAE, PGE, PAT, MSR,
 * CLFLUSH); every CPU model hvd accepts implements all of it (hvd refuses a model that
 * does not, hv_cpuid_baseline_missing), so a guest that uses only what CPUID says finds
 * it on every host. The vendor is "VmmsBaseline", the hypervisor bit is set and leaf
 * 0x40000000 says "VmmsVmmsVmms"; any leaf not listed reads as zeros, and the maximum
 * leaves say so (basic 1, hypervisor 0x40000000, extended 0x80000008). The cost: such
 * a guest does not see SSE3 and later extensions its host's model would have, as a
 * Hyper-V guest in processor compatibility mode does not. */
#include <glib.h>
#include <string.h>

#include "hv-cpuid.h"

const HvCpuidLeaf hv_cpuid_vector_leaves[] = {
        {.leaf = 0x0},        {.leaf = 0x1},        {.leaf = 0x7},        {.leaf = 0xd},
        {.leaf = 0xd, 1},     {.leaf = 0x40000000}, {.leaf = 0x80000000}, {.leaf = 0x80000001},
        {.leaf = 0x80000002}, {.leaf = 0x80000003}, {.leaf = 0x80000004}, {.leaf = 0x80000008},
};
const size_t hv_cpuid_vector_leaves_count = G_N_ELEMENTS(hv_cpuid_vector_leaves);
G_STATIC_ASSERT(G_N_ELEMENTS(hv_cpuid_vector_leaves) <= HV_CPUID_TABLE_MAX);

/* Leaf 1 EDX and leaf 0x80000001 EDX feature bits of the baseline. */
typedef struct Feature {
        uint32_t leaf;
        uint32_t bit;
        const char *name;
} Feature;

static const Feature baseline_features[] = {
        {0x1, 0, "FPU"},        {0x1, 3, "PSE"},        {0x1, 4, "TSC"},
        {0x1, 5, "MSR"},        {0x1, 6, "PAE"},        {0x1, 8, "CX8"},
        {0x1, 13, "PGE"},       {0x1, 15, "CMOV"},      {0x1, 16, "PAT"},
        {0x1, 19, "CLFSH"},     {0x1, 23, "MMX"},       {0x1, 24, "FXSR"},
        {0x1, 25, "SSE"},       {0x1, 26, "SSE2"},      {0x80000001, 11, "SYSCALL"},
        {0x80000001, 20, "NX"}, {0x80000001, 29, "LM"},
};

static uint32_t baseline_edx(uint32_t leaf)
{
        uint32_t edx = 0;

        for (size_t i = 0; i < G_N_ELEMENTS(baseline_features); i++)
                if (baseline_features[i].leaf == leaf)
                        edx |= 1u << baseline_features[i].bit;
        return edx;
}

#define FOURCC(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define BASELINE_SIGNATURE 0x00000663u /* family 6, model 6, stepping 3 */
#define BASELINE_LEAF1_EBX 0x00000800u /* CLFLUSH line 8 x 8 bytes; APIC id 0 */
#define BASELINE_HYPERVISOR (1u << 31) /* leaf 1 ECX: running under a hypervisor */
#define BASELINE_ADDRESS_BITS 0x3028u  /* 40 physical, 48 linear */
static const char baseline_brand[48] = "vmms baseline x86-64 processor";

bool hv_cpuid_normalized(uint32_t leaf, uint32_t subleaf, HvCpuidLeaf *ret)
{
        HvCpuidLeaf r = {.leaf = leaf, .subleaf = subleaf};
        bool listed = true;

        switch (leaf) {
        case 0x0:
                r.eax = 0x1;
                r.ebx = FOURCC('V', 'm', 'm', 's');
                r.edx = FOURCC('B', 'a', 's', 'e');
                r.ecx = FOURCC('l', 'i', 'n', 'e');
                break;
        case 0x1:
                r.eax = BASELINE_SIGNATURE;
                r.ebx = BASELINE_LEAF1_EBX;
                r.ecx = BASELINE_HYPERVISOR;
                r.edx = baseline_edx(0x1);
                break;
        case 0x40000000:
                r.eax = 0x40000000;
                r.ebx = r.ecx = r.edx = FOURCC('V', 'm', 'm', 's');
                break;
        case 0x80000000:
                r.eax = 0x80000008;
                break;
        case 0x80000001:
                r.edx = baseline_edx(0x80000001);
                break;
        case 0x80000002:
        case 0x80000003:
        case 0x80000004:
                memcpy(&r.eax, baseline_brand + (leaf - 0x80000002) * 16, 4);
                memcpy(&r.ebx, baseline_brand + (leaf - 0x80000002) * 16 + 4, 4);
                memcpy(&r.ecx, baseline_brand + (leaf - 0x80000002) * 16 + 8, 4);
                memcpy(&r.edx, baseline_brand + (leaf - 0x80000002) * 16 + 12, 4);
                break;
        case 0x80000008:
                r.eax = BASELINE_ADDRESS_BITS;
                break;
        default:
                listed = false;
                break;
        }
        *ret = r;
        return listed;
}

char *hv_cpuid_baseline_missing(const HvCpuidLeaf *table, size_t n)
{
        g_autoptr(GString) missing = g_string_new(NULL);

        for (size_t f = 0; f < G_N_ELEMENTS(baseline_features); f++) {
                bool has = false;

                for (size_t i = 0; i < n; i++)
                        if (table[i].leaf == baseline_features[f].leaf && table[i].subleaf == 0)
                                has = table[i].edx & (1u << baseline_features[f].bit);
                if (!has)
                        g_string_append_printf(missing, "%s%s", missing->len ? " " : "",
                                               baseline_features[f].name);
        }
        return missing->len ? g_string_free(g_steal_pointer(&missing), FALSE) : NULL;
}

void hv_cpuid_hash(const HvCpuidLeaf *table, size_t n, char ret[HV_CPUID_HASH_LEN + 1])
{
        g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);

        for (size_t i = 0; i < n; i++) {
                const uint32_t words[6] = {table[i].leaf, table[i].subleaf, table[i].eax,
                                           table[i].ebx,  table[i].ecx,     table[i].edx};
                uint8_t bytes[sizeof(words)];

                for (size_t w = 0; w < G_N_ELEMENTS(words); w++)
                        for (int b = 0; b < 4; b++)
                                bytes[w * 4 + b] = (uint8_t)(words[w] >> (8 * b));
                g_checksum_update(sum, bytes, sizeof(bytes));
        }
        g_strlcpy(ret, g_checksum_get_string(sum), HV_CPUID_HASH_LEN + 1);
}
