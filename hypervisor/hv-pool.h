/* Machine memory pool: the memory hvd may assign to partitions, and what is assigned. */
#pragma once

#include <stdint.h>

/* Accessed from the main thread only (partition create, destroy, and later hot-add and
 * balloon), so it takes no lock. Charges and credits are whole pages. */
typedef struct HvPool {
        uint64_t total_bytes;
        uint64_t used_bytes;
} HvPool;

int hv_pool_init(HvPool *pool, uint64_t total_bytes);
int hv_pool_charge(HvPool *pool, uint64_t bytes);
int hv_pool_credit(HvPool *pool, uint64_t bytes);
uint64_t hv_pool_available(const HvPool *pool);
