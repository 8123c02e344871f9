/* The event log as the core writes it: each event goes to the store (with the change
 * it describes, or alone) and then to every watcher (WatchEvents, D-Bus signals). */
#pragma once

#include <glib.h>

#include "vmms-store.h"

typedef struct VmmsEvents VmmsEvents;

/* A watcher gets every event recorded after it subscribed. */
typedef void (*VmmsEventFn)(const VmmsEventRecord *event, void *userdata);

VmmsEvents *vmms_events_new(VmmsStore *store);
void vmms_events_free(VmmsEvents *events);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsEvents, vmms_events_free)

void *vmms_events_watch(VmmsEvents *events, VmmsEventFn fn, void *userdata);
void vmms_events_unwatch(VmmsEvents *events, void *watch);
/* Tells the watchers of an event the store already holds. */
void vmms_events_notify(VmmsEvents *events, const VmmsEventRecord *event);
/* Appends an event that changes no definition, then tells the watchers. */
int vmms_events_record(VmmsEvents *events, VmmsEventRecord *event);
