/* The root interface: hvd's unix socket, served on the main thread. */
#pragma once

#include "hv.h"

typedef struct HvServer HvServer;

/* What one connection (one worker) may hold at once, so that no client can take the
 * whole pool or every LP's worth of VPs. A request past a limit is refused naming it. */
typedef struct HvConnectionLimits {
        uint32_t partitions;
        uint32_t vps;          /* over all its partitions, hot-added ones included */
        uint64_t memory_bytes; /* assigned memory over all its partitions */
} HvConnectionLimits;

#define HV_CONNECTION_PARTITIONS_DEFAULT 4u
#define HV_CONNECTION_VPS_DEFAULT 64u        /* two partitions of the most VPs */
#define HV_CONNECTION_MEMORY_DEFAULT_PCT 75u /* of the pool */

/* `limits` NULL: the defaults above. */
int hv_server_new(Hv *hv, const char *socket_path, const HvConnectionLimits *limits, HvServer **ret);
void hv_server_free(HvServer *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvServer, hv_server_free)
