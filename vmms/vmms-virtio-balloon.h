/* A virtio-balloon guest's committed memory (what it cannot give back) from its balloon
 * stats, read consistently while the balloon moves. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* What is remembered between stats reads. Zeroed: nothing known yet. */
typedef struct VmmsVirtioBalloon {
        uint64_t held_kib;       /* what the guest held at the last read */
        uint64_t report_at_move; /* the stats' last update when held was last seen to change */
        uint64_t reserved_kib;   /* held - MemTotal, learned while the balloon was still */
        bool known;              /* reserved_kib has been learned */
} VmmsVirtioBalloon;

/* One stats read: held_kib is what the guest holds now (the balloon's actual size plus
 * what virtio-mem has plugged, live figures QEMU updates as the guest moves pages);
 * total_kib and available_kib are MemTotal and MemAvailable from the guest's last stats
 * report, stamped last_update (seconds; 0: the driver has not reported). Returns false
 * while the figure is not known (no report yet, or none since the first read); else
 * *ret_committed_kib = reserved + MemTotal - MemAvailable. */
bool vmms_virtio_balloon_committed(VmmsVirtioBalloon *b, uint64_t held_kib, uint64_t total_kib,
                                   uint64_t available_kib, uint64_t last_update, uint64_t *ret_committed_kib);
