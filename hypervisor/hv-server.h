/* The root interface: hvd's unix socket, served on the main thread. */
#pragma once

#include "hv.h"

typedef struct HvServer HvServer;

int hv_server_new(Hv *hv, const char *socket_path, HvServer **ret);
void hv_server_free(HvServer *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvServer, hv_server_free)
