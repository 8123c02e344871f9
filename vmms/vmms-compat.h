/* Processor compatibility vectors as vmmsd handles them (what each field is and why:
 * hypervisor/hv-cpuid.c): read from hvd, carried between hosts as one a{sv} of the
 * migration protocol, and compared field by field into the differences Compare-VM and
 * a refused Move-VM list. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv.pb-c.h"

/* Bounds on what a peer may send. */
#define VMMS_COMPAT_CPUID_MAX 64
#define VMMS_COMPAT_STRING_MAX 128
#define VMMS_COMPAT_DIFFERENCES_MAX 256

typedef struct VmmsCompatLeaf {
        uint32_t leaf, subleaf;
        uint32_t regs[4]; /* eax ebx ecx edx */
} VmmsCompatLeaf;

typedef struct VmmsCompatVector {
        char *engine;
        char *engine_version;
        char *cpu_model;
        char *cpuid_hash;
        VmmsCompatLeaf *cpuid;
        size_t n_cpuid;
        uint32_t guest_abi_version;
        uint32_t protocol_version;
        bool normalized;
} VmmsCompatVector;

void vmms_compat_vector_clear(VmmsCompatVector *v);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmmsCompatVector, vmms_compat_vector_clear)

/* A copy of hvd's answer (hv.proto CompatibilityVector). */
void vmms_compat_vector_from_hv(const Vmms__Hv__CompatibilityVector *in, VmmsCompatVector *ret);

/* The wire form: a{sv} with engine s, engine-version s, cpu-model s, cpuid-hash s,
 * cpuid a(uuuuuu) (leaf, subleaf, eax, ebx, ecx, edx), guest-abi u, hv-protocol u,
 * normalized b. The result is floating. */
GVariant *vmms_compat_vector_to_variant(const VmmsCompatVector *v);
/* From a peer: every key present with its type, strings printable and at most
 * VMMS_COMPAT_STRING_MAX bytes, at most VMMS_COMPAT_CPUID_MAX leaves, each
 * (leaf, subleaf) once. false with a message naming what was wrong. */
bool vmms_compat_vector_from_variant(GVariant *dict, VmmsCompatVector *ret, char **ret_error);

/* One field that differs: "engine", "engine_version", "cpu_model", "cpuid_hash",
 * "guest_abi_version", "protocol_version", "normalized", or one register of one leaf,
 * "cpuid 0x00000001.0 ecx" (a leaf only one side has reads "absent" on the other). */
typedef struct VmmsCompatDifference {
        char *field;
        char *source;
        char *destination;
} VmmsCompatDifference;

void vmms_compat_difference_free(VmmsCompatDifference *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsCompatDifference, vmms_compat_difference_free)

/* The VM's vector on the source against the destination's: the differences in field
 * order (GPtrArray of VmmsCompatDifference, owning them); empty when compatible. */
GPtrArray *vmms_compat_compare(const VmmsCompatVector *source, const VmmsCompatVector *destination);

/* "cpu_model: qemu64 on the source, haswell on the destination; ..." (at most `max`
 * differences, then "and N more"). */
char *vmms_compat_differences_format(GPtrArray *differences, size_t max);

/* The differences as a(sss) (field, source, destination), floating; and back from a
 * peer, bounded like a vector. */
GVariant *vmms_compat_differences_to_variant(GPtrArray *differences);
bool vmms_compat_differences_from_variant(GVariant *array, GPtrArray **ret, char **ret_error);
