/* A libvirt VM's devices beyond its boot source: hard disk drives (disk images) and
 * network adapters (NICs on libvirt networks). What each may be, the image format probe,
 * the MAC addresses given to adapters, and the text the store keeps them in. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "vmms-definition.h"
#include "vmms-error.h"

#define VMMS_DISK_PATH_LENGTH_MAX 1024
#define VMMS_SWITCH_NAME_LENGTH_MAX 64
#define VMMS_ADAPTER_NAME_DEFAULT "Network Adapter"

/* The image at `path` may be attached: an absolute path to a regular file vmmsd can read
 * and write, whose format is one QEMU opens without reading other files: qcow2 without a
 * backing file, or raw (a whole number of 512-byte sectors). Other formats are refused by
 * name. *ret_format: "qcow2" or "raw". */
bool vmms_disk_image_valid(const char *path, char **ret_format, VmmsError *error);
/* Whether two paths name the same file (device and inode); false if either is missing. */
bool vmms_disk_same_file(const char *a, const char *b);

/* A libvirt network's name (SwitchName) and an adapter's name: 1-64 printable bytes of
 * UTF-8 (adapter names up to VMMS_NAME_LENGTH_MAX), no '/', no blank ends. */
bool vmms_switch_name_valid(const char *name, VmmsError *error);
bool vmms_adapter_name_valid(const char *name, VmmsError *error);
/* A locally administered MAC address in QEMU's 52:54:00 range, random in its last three
 * bytes. */
void vmms_mac_address_generate(char ret[18]);

/* The store's text for each list ("" when empty): one line per device, fields
 * tab-separated (the validators above keep tabs and newlines out of every field). Parsing
 * skips malformed lines. */
char *vmms_hard_disk_drives_to_text(const GArray *drives);
GArray *vmms_hard_disk_drives_from_text(const char *text);
char *vmms_network_adapters_to_text(const GArray *adapters);
GArray *vmms_network_adapters_from_text(const char *text);
