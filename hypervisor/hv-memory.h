/* Dynamic Memory in hvd: hot-add, balloon and unballoon of a partition's pages, with
 * the pool charged and credited page by page. Main thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv-partition.h"

/* Hot-add is in these units (Hyper-V's granularity), except a last piece up to the
 * partition's maximum. */
#define HV_HOT_ADD_UNIT (2ull << 20)
/* How often hvd looks for ballooned pages the guest touched again (hv-memory.c). */
#define HV_MEMORY_RECONCILE_MS 10u
/* What resident may exceed assigned by between two looks: what a guest's VPs can touch
 * in HV_MEMORY_RECONCILE_MS (about 1 GiB/s per VP storing to a new page per instruction
 * batch) plus the reconcile's own run. Reported figures are reconciled first, so they
 * stay within it with room to spare. */
#define HV_MEMORY_RESIDENT_SLACK_BYTES (32ull << 20)
/* Pages one balloon or unballoon request may name (bounds the work of one request). */
#define HV_MEMORY_PAGES_MAX 65536u

typedef enum HvPageVerdict {
        HV_PAGE_ACCEPTED,
        HV_PAGE_OUTSIDE_RAM, /* not inside the guest's visible RAM */
        HV_PAGE_DUPLICATE,   /* named earlier in the same request */
        HV_PAGE_WRONG_STATE, /* balloon: ballooned already; unballoon: not ballooned */
} HvPageVerdict;

typedef struct HvPageTally {
        uint32_t accepted;
        uint32_t outside_ram;
        uint32_t duplicate;
        uint32_t wrong_state;
} HvPageTally;

/* Judges each page of a request against the partition's visible pages and its ballooned
 * bitmap (NULL: none ballooned), for a balloon (`to_balloon`) or an unballoon. Pure: it
 * changes nothing. ret_verdicts has n entries. */
void hv_memory_classify(uint64_t visible_pages, const uint64_t *ballooned, bool to_balloon,
                        const uint64_t *pfns, size_t n, HvPageVerdict *ret_verdicts, HvPageTally *ret_tally);

/* Each returns 0 or a negative errno with *ret_error naming the cause. The page
 * requests fill ret_verdicts (n entries) and ret_tally; refusals are not errors. */
int hv_memory_hot_add(HvPartition *p, uint64_t bytes, char **ret_error);
int hv_memory_balloon(HvPartition *p, const uint64_t *pfns, size_t n, HvPageVerdict *ret_verdicts,
                      HvPageTally *ret_tally, char **ret_error);
int hv_memory_unballoon(HvPartition *p, const uint64_t *pfns, size_t n, HvPageVerdict *ret_verdicts,
                        HvPageTally *ret_tally, char **ret_error);

/* Ballooned pages the guest touched again are taken out of the balloon and charged to
 * the pool and the quota (*ret_pages of them). Cheap when resident <= assigned (one
 * fstat). Returns -ENOMEM or -EDQUOT, charging nothing, when they cannot be covered:
 * the caller stops the partition and calls hv_memory_release_retouched. */
int hv_memory_reconcile(HvPartition *p, uint64_t *ret_pages, char **ret_error);
/* Punches the retouched ballooned pages (and anything past visible) out again; for a
 * partition whose VPs no longer run. */
void hv_memory_release_retouched(HvPartition *p);
