/* Machine memory pool accounting. */
#include <errno.h>

#include "hv-abi.h"
#include "hv-pool.h"

static int pages_only(uint64_t bytes)
{
        return bytes % HV_PAGE_SIZE == 0 ? 0 : -EINVAL;
}

int hv_pool_init(HvPool *pool, uint64_t total_bytes)
{
        if (total_bytes == 0 || pages_only(total_bytes) < 0)
                return -EINVAL;
        pool->total_bytes = total_bytes;
        pool->used_bytes = 0;
        return 0;
}

/* Returns -ENOMEM, and charges nothing, when the pool cannot cover all of it. */
int hv_pool_charge(HvPool *pool, uint64_t bytes)
{
        if (pages_only(bytes) < 0)
                return -EINVAL;
        if (bytes > hv_pool_available(pool))
                return -ENOMEM;
        pool->used_bytes += bytes;
        return 0;
}

/* Crediting more than is charged is a caller bug; it is refused, not absorbed. */
int hv_pool_credit(HvPool *pool, uint64_t bytes)
{
        if (pages_only(bytes) < 0)
                return -EINVAL;
        if (bytes > pool->used_bytes)
                return -ERANGE;
        pool->used_bytes -= bytes;
        return 0;
}

uint64_t hv_pool_available(const HvPool *pool)
{
        return pool->total_bytes - pool->used_bytes;
}
