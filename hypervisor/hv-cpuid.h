/* The processor a guest sees (its CPUID), the normalized baseline a partition may ask
 * for instead, and the compatibility vector hosts compare before moving a VM. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct HvCpuidLeaf {
        uint32_t leaf, subleaf;
        uint32_t eax, ebx, ecx, edx;
} HvCpuidLeaf;

/* The leaves a vector lists: what decides which instructions a guest may use and how
 * it identifies the processor. */
extern const HvCpuidLeaf hv_cpuid_vector_leaves[];
extern const size_t hv_cpuid_vector_leaves_count;
#define HV_CPUID_TABLE_MAX 16

/* The name the normalized processor goes by in a vector's cpu_model. */
#define HV_CPUID_BASELINE_NAME "vmms-baseline-1"
/* A normalized vector's engine version: any build of the engine can run it. */
#define HV_CPUID_BASELINE_ENGINE_VERSION "any"

/* The normalized answer to CPUID (leaf, subleaf): the baseline table's registers, or
 * zeros for a leaf it does not list. Returns whether the table lists it. */
bool hv_cpuid_normalized(uint32_t leaf, uint32_t subleaf, HvCpuidLeaf *ret);

/* The baseline's features `table` (a model's own answers, hv_cpuid_vector_leaves)
 * lacks, as a space-separated list of names ("NX LM SSE2"); NULL when it has them all.
 * A model that lacks one cannot run the guest ABI's 64-bit kernels, nor a normalized
 * partition. */
char *hv_cpuid_baseline_missing(const HvCpuidLeaf *table, size_t n);

/* SHA-256 of the table (each leaf as six little-endian u32, in order), lower-case hex. */
#define HV_CPUID_HASH_LEN 64
void hv_cpuid_hash(const HvCpuidLeaf *table, size_t n, char ret[HV_CPUID_HASH_LEN + 1]);

/* A processor as a move sees it (hv.proto CompatibilityVector says what each field is). */
typedef struct HvCompatVector {
        char engine[32];
        char engine_version[32];
        char cpu_model[48];
        bool normalized;
        HvCpuidLeaf cpuid[HV_CPUID_TABLE_MAX];
        size_t n_cpuid;
        char cpuid_hash[HV_CPUID_HASH_LEN + 1];
        uint32_t guest_abi_version;
        uint32_t protocol_version;
} HvCompatVector;
