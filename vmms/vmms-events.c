/* The event log's writer and its watchers. */
#include "vmms-events.h"

typedef struct Watch {
        VmmsEventFn fn;
        void *userdata;
} Watch;

struct VmmsEvents {
        VmmsStore *store;
        GList *watches;
};

VmmsEvents *vmms_events_new(VmmsStore *store)
{
        VmmsEvents *events = g_new0(VmmsEvents, 1);

        events->store = store;
        return events;
}

void vmms_events_free(VmmsEvents *events)
{
        if (!events)
                return;
        g_list_free_full(events->watches, g_free);
        g_free(events);
}

void *vmms_events_watch(VmmsEvents *events, VmmsEventFn fn, void *userdata)
{
        Watch *w = g_new0(Watch, 1);

        w->fn = fn;
        w->userdata = userdata;
        events->watches = g_list_append(events->watches, w);
        return w;
}

void vmms_events_unwatch(VmmsEvents *events, void *watch)
{
        events->watches = g_list_remove(events->watches, watch);
        g_free(watch);
}

void vmms_events_notify(VmmsEvents *events, const VmmsEventRecord *event)
{
        for (GList *l = events->watches; l;) {
                Watch *w = l->data;

                l = l->next; /* a watcher may unsubscribe from its callback */
                w->fn(event, w->userdata);
        }
}

int vmms_events_record(VmmsEvents *events, VmmsEventRecord *event)
{
        int r = vmms_store_event_append(events->store, event);

        if (r < 0)
                return r;
        vmms_events_notify(events, event);
        return 0;
}
