/* vmctl's output: aligned tables like PowerShell's Format-Table, and JSON whose field names follow
 * vmms.proto's JSON mapping (lowerCamelCase), built from the protobuf-c descriptors as a json-glib tree. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "vmms.pb-c.h"

typedef struct VmctlColumn {
        const char *header;
        bool right; /* numbers are right-aligned, header and dashes too */
} VmctlColumn;

typedef struct VmctlTable VmctlTable;

VmctlTable *vmctl_table_new(const VmctlColumn *columns, size_t n_columns);
void vmctl_table_free(VmctlTable *table);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmctlTable, vmctl_table_free)

/* Adds a row of exactly n_columns strings, which the table takes (g_free'd with it). */
void vmctl_table_add(VmctlTable *table, ...);
size_t vmctl_table_rows(const VmctlTable *table);

/* Header, a dashes line under each header, then the rows; columns one space apart, the last one not
 * padded. Nothing at all when the table has no rows, as PowerShell prints nothing for no objects. */
void vmctl_table_render(const VmctlTable *table, GString *out);

/* proto field name to JSON name: cpu_usage_pct -> cpuUsagePct. */
char *vmctl_json_name(const char *proto_name);

/* JSON written by json-glib, then a newline: pretty indents with two spaces; otherwise one line. */
void vmctl_json_append_node(GString *out, JsonNode *root, bool pretty);
/* Every field, default or not, in declaration order; enums by their proto names; 64-bit integers as
 * JSON numbers; text that is not UTF-8 made valid (U+FFFD for each bad byte run). */
void vmctl_json_append_message(GString *out, const ProtobufCMessage *message, bool pretty);
void vmctl_json_append_array(GString *out, ProtobufCMessage *const *messages, size_t n_messages, bool pretty);

/* PowerShell's words for a VM state: Off, Starting, Running, Paused, Stopping, Saved, Migrating. */
const char *vmctl_vm_state_name(Vmms__V1__VmState state);
/* A TimeSpan as PowerShell prints it: [d.]hh:mm:ss. */
char *vmctl_format_uptime(int64_t ms);
/* Counter values: integers as integers, anything else with two decimals. */
char *vmctl_format_counter_value(double value);

/* The default tables of each verb. */
void vmctl_format_vms(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);
void vmctl_format_processors(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);
void vmctl_format_memory(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);
void vmctl_format_host(GString *out, const Vmms__V1__Host *host);
/* Get-VM -Cluster: each VM with the host that owns it. */
void vmctl_format_cluster_vms(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);
/* Get-ClusterNode: one row per host (Up, Down or Paused). */
void vmctl_format_cluster_nodes(GString *out, Vmms__V1__ClusterNode *const *nodes, size_t n_nodes);
/* Get-Cluster, Set-Cluster: one row of the cluster-wide settings. */
void vmctl_format_cluster_settings(GString *out, const Vmms__V1__ClusterSettings *settings);
/* Compare-VM's report: the verdict, the destination's reason, and each difference. */
void vmctl_format_compare(GString *out, const char *vm_name, const Vmms__V1__CompareVmResult *result);
void vmctl_format_counters(GString *out, const Vmms__V1__GetCountersResponse *counters);
void vmctl_format_host_health(GString *out, const Vmms__V1__HostHealth *health);
void vmctl_format_events(GString *out, Vmms__V1__Event *const *events, size_t n_events);
/* Get-VMHardDiskDrive / Get-VMNetworkAdapter: one row per device of each VM. */
void vmctl_format_hard_disk_drives(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);
void vmctl_format_network_adapters(GString *out, Vmms__V1__Vm *const *vms, size_t n_vms);
void vmctl_format_checkpoints(GString *out, const char *vm_name, Vmms__V1__Checkpoint *const *checkpoints,
                              size_t n_checkpoints);

/* One event as a line of fixed-width columns, for Get-VMEvent -Wait, whose rows arrive one by one;
 * with header, the header and dashes lines come first. */
void vmctl_format_event_line(GString *out, const Vmms__V1__Event *event, bool header);
