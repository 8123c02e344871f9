/* A libvirt VM's hard disk drives and network adapters (vmms-devices.h). The format
 * probe reads the image's first bytes, as QEMU's would, so that what vmmsd tells libvirt
 * (<driver type=...>) is what the file is: a qcow2 image attached as raw would hand the
 * guest the container's bytes, and a raw disk whose guest wrote a qcow2 header would be
 * opened as qcow2 on the next boot. qcow2 images with a backing file are refused: QEMU
 * would open the file the header names, which can be any file on the host. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmms-devices.h"

/* Formats refused by name, with the magic QEMU's probes look for at offset 0. */
static const struct {
        const char *magic;
        size_t len;
        const char *name;
} refused_formats[] = {
        {"vhdxfile", 8, "VHDX"}, {"conectix", 8, "VHD"},
        {"KDMV", 4, "VMDK"},     {"# Disk DescriptorFile", 21, "VMDK"},
        {"QED\0", 4, "QED"},     {"LUKS\xba\xbe", 6, "LUKS"},
};

static bool text_field_valid(const char *field, const char *text, size_t max, VmmsError *error)
{
        size_t len = text ? strlen(text) : 0;
        g_autofree char *quoted = NULL;

        if (len == 0 || len > max || !g_utf8_validate(text, -1, NULL)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "%s must be 1-%zu bytes of UTF-8 (got %zu)", field, max, len);
                return false;
        }
        for (const char *p = text; *p; p = g_utf8_next_char(p))
                if (vmms_unichar_hidden(g_utf8_get_char(p), NULL)) {
                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "%s '%s' holds U+%04X, a control, format or separator character",
                                       field, quoted = vmms_quote(text), g_utf8_get_char(p));
                        return false;
                }
        if (text[0] == ' ' || text[len - 1] == ' ') {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "%s '%s' begins or ends with a space",
                               field, quoted = vmms_quote(text));
                return false;
        }
        return true;
}

static const char *probe(const unsigned char *head, size_t n, const char **ret_refused)
{
        *ret_refused = NULL;
        if (n >= 4 && memcmp(head, "QFI\xfb", 4) == 0)
                return "qcow2";
        for (size_t i = 0; i < G_N_ELEMENTS(refused_formats); i++)
                if (n >= refused_formats[i].len &&
                    memcmp(head, refused_formats[i].magic, refused_formats[i].len) == 0) {
                        *ret_refused = refused_formats[i].name;
                        return NULL;
                }
        /* VDI: its signature sits at offset 64. */
        if (n >= 68 && memcmp(head + 64, "\x7f\x10\xda\xbe", 4) == 0) {
                *ret_refused = "VDI";
                return NULL;
        }
        return "raw";
}

bool vmms_disk_image_valid(const char *path, char **ret_format, VmmsError *error)
{
        g_autofree char *quoted = NULL;
        unsigned char head[512] = {0};
        const char *format, *refused;
        struct stat st;
        ssize_t n;
        int fd;

        if (!text_field_valid("Path", path, VMMS_DISK_PATH_LENGTH_MAX, error))
                return false;
        quoted = vmms_quote(path);
        if (!g_path_is_absolute(path)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "Path '%s' is not an absolute path",
                               quoted);
                return false;
        }
        if (stat(path, &st) < 0) {
                int e = errno;

                vmms_error_set(error, e == ENOENT ? VMMS_ERROR_NOT_FOUND : VMMS_ERROR_INVALID_ARGUMENT,
                               "Path '%s' cannot be opened: %s", quoted, g_strerror(e));
                return false;
        }
        if (!S_ISREG(st.st_mode)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "Path '%s' is not a regular file (a disk image file is needed)", quoted);
                return false;
        }
        /* Read and write: the guest writes to it. O_NONBLOCK: never wait on a FIFO swapped in. */
        fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                int e = errno;

                if (fd >= 0)
                        close(fd);
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "Path '%s' cannot be opened for reading and writing: %s", quoted,
                               fd < 0 ? g_strerror(e) : "it is no longer a regular file");
                return false;
        }
        n = pread(fd, head, sizeof(head), 0);
        close(fd);
        if (n < 0) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "Path '%s' cannot be read: %s", quoted,
                               g_strerror(errno));
                return false;
        }
        format = probe(head, (size_t)n, &refused);
        if (!format) {
                vmms_error_set(
                        error, VMMS_ERROR_INVALID_ARGUMENT,
                        "Path '%s' is a %s image; vmms attaches qcow2 and raw images (qemu-img convert "
                        "-O qcow2 converts it)",
                        quoted, refused);
                return false;
        }
        if (strcmp(format, "qcow2") == 0) {
                uint32_t version;
                uint64_t backing;

                memcpy(&version, head + 4, sizeof(version));
                memcpy(&backing, head + 8, sizeof(backing));
                if (n < 16 || (be32toh(version) != 2 && be32toh(version) != 3)) {
                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "Path '%s' has a qcow2 signature but no valid qcow2 header", quoted);
                        return false;
                }
                if (be64toh(backing) != 0) {
                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "Path '%s' is a qcow2 image with a backing file; vmms attaches "
                                       "standalone images only (qemu-img convert -O qcow2 flattens it)",
                                       quoted);
                        return false;
                }
        } else if (st.st_size == 0 || st.st_size % 512 != 0) {
                vmms_error_set(
                        error, VMMS_ERROR_INVALID_ARGUMENT,
                        "Path '%s' is a raw image of %lld bytes; a raw disk is a whole, non-zero number "
                        "of 512-byte sectors",
                        quoted, (long long)st.st_size);
                return false;
        }
        *ret_format = g_strdup(format);
        return true;
}

bool vmms_disk_same_file(const char *a, const char *b)
{
        struct stat sa, sb;

        if (!a || !b || !*a || !*b || stat(a, &sa) < 0 || stat(b, &sb) < 0)
                return false;
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool vmms_switch_name_valid(const char *name, VmmsError *error)
{
        if (!text_field_valid("SwitchName", name, VMMS_SWITCH_NAME_LENGTH_MAX, error))
                return false;
        if (strchr(name, '/')) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "SwitchName '%s' holds a '/'; libvirt network names cannot", name);
                return false;
        }
        return true;
}

bool vmms_adapter_name_valid(const char *name, VmmsError *error)
{
        return text_field_valid("Name", name, VMMS_NAME_LENGTH_MAX, error);
}

void vmms_mac_address_generate(char ret[18])
{
        guint32 r = g_random_int();

        g_snprintf(ret, 18, "52:54:00:%02x:%02x:%02x", (r >> 16) & 0xff, (r >> 8) & 0xff, r & 0xff);
}

char *vmms_hard_disk_drives_to_text(const GArray *drives)
{
        GString *text = g_string_new(NULL);

        for (guint i = 0; drives && i < drives->len; i++) {
                const VmmsHardDiskDrive *d = &g_array_index(drives, VmmsHardDiskDrive, i);

                g_string_append_printf(text, "%s\t%s\n", d->format, d->path);
        }
        return g_string_free(text, FALSE);
}

GArray *vmms_hard_disk_drives_from_text(const char *text)
{
        GArray *drives = vmms_hard_disk_drives_new();
        g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);

        for (char **line = lines; *line; line++) {
                g_auto(GStrv) f = g_strsplit(*line, "\t", 2);
                VmmsHardDiskDrive d;

                if (g_strv_length(f) != 2 || !*f[0] || !*f[1])
                        continue;
                d.format = g_strdup(f[0]);
                d.path = g_strdup(f[1]);
                g_array_append_val(drives, d);
        }
        return drives;
}

char *vmms_network_adapters_to_text(const GArray *adapters)
{
        GString *text = g_string_new(NULL);

        for (guint i = 0; adapters && i < adapters->len; i++) {
                const VmmsNetworkAdapter *a = &g_array_index(adapters, VmmsNetworkAdapter, i);

                g_string_append_printf(text, "%s\t%s\t%s\n", a->name, a->switch_name, a->mac_address);
        }
        return g_string_free(text, FALSE);
}

GArray *vmms_network_adapters_from_text(const char *text)
{
        GArray *adapters = vmms_network_adapters_new();
        g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);

        for (char **line = lines; *line; line++) {
                g_auto(GStrv) f = g_strsplit(*line, "\t", 3);
                VmmsNetworkAdapter a = {0};

                if (g_strv_length(f) != 3 || !*f[0] || !*f[1] || strlen(f[2]) != 17)
                        continue;
                a.name = g_strdup(f[0]);
                a.switch_name = g_strdup(f[1]);
                g_strlcpy(a.mac_address, f[2], sizeof(a.mac_address));
                g_array_append_val(adapters, a);
        }
        return adapters;
}
