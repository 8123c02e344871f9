/* The libvirt engine's devices: which disk images may be attached (the format probe, by
 * table), the store's text for the lists, and store migration 8 (rows written before it
 * keep everything and have no devices). */
#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <string.h>

#include "vmms-devices.h"
#include "vmms-store.h"

static char *write_file(const char *dir, const char *name, const void *data, size_t len)
{
        char *path = g_build_filename(dir, name, NULL);

        g_assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
        return path;
}

/* A qcow2 header: magic, version, backing file offset (big-endian). */
static void qcow2_header(unsigned char *buf, uint32_t version, uint64_t backing_offset)
{
        memcpy(buf, "QFI\xfb", 4);
        for (int i = 0; i < 4; i++)
                buf[4 + i] = (unsigned char)(version >> (24 - 8 * i));
        for (int i = 0; i < 8; i++)
                buf[8 + i] = (unsigned char)(backing_offset >> (56 - 8 * i));
}

static void test_disk_images_are_probed_and_refused_by_name(void)
{
        g_autofree char *dir = g_dir_make_tmp("vmms-devices-XXXXXX", NULL);
        static unsigned char buf[4096];
        const struct {
                const char *name;
                size_t len;
                const char *magic; /* at offset 0, or NULL */
                int qcow2_version; /* > 0: a qcow2 header */
                uint64_t backing;
                const char *format; /* NULL: refused */
                const char *says;
        } cases[] = {
                {"plain.qcow2", 4096, NULL, 3, 0, "qcow2", NULL},
                {"v2.qcow2", 4096, NULL, 2, 0, "qcow2", NULL},
                {"backed.qcow2", 4096, NULL, 3, 512, NULL, "with a backing file"},
                {"v9.qcow2", 4096, NULL, 9, 0, NULL, "no valid qcow2 header"},
                {"disk.raw", 4096, NULL, 0, 0, "raw", NULL},
                {"odd.raw", 1000, NULL, 0, 0, NULL, "512-byte sectors"},
                {"empty.raw", 0, NULL, 0, 0, NULL, "512-byte sectors"},
                {"disk.vhdx", 4096, "vhdxfile", 0, 0, NULL, "is a VHDX image"},
                {"disk.vhd", 4096, "conectix", 0, 0, NULL, "is a VHD image"},
                {"disk.vmdk", 4096, "KDMV", 0, 0, NULL, "is a VMDK image"},
                {"desc.vmdk", 4096, "# Disk DescriptorFile", 0, 0, NULL, "is a VMDK image"},
                {"disk.qed", 4096, "QED", 0, 0, NULL, "is a QED image"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *path = NULL;
                g_autofree char *format = NULL;
                VmmsError error = {0};
                bool ok;

                memset(buf, 0, sizeof(buf));
                if (cases[i].qcow2_version)
                        qcow2_header(buf, (uint32_t)cases[i].qcow2_version, cases[i].backing);
                if (cases[i].magic)
                        memcpy(buf, cases[i].magic, strlen(cases[i].magic) + 1);
                path = write_file(dir, cases[i].name, buf, cases[i].len);
                ok = vmms_disk_image_valid(path, &format, &error);
                g_test_message("%s: %s", cases[i].name, ok ? format : error.message);
                g_assert_cmpint(ok, ==, cases[i].format != NULL);
                if (ok)
                        g_assert_cmpstr(format, ==, cases[i].format);
                else
                        g_assert_nonnull(strstr(error.message, cases[i].says));
                vmms_error_clear(&error);
                g_unlink(path);
        }
        {
                g_autofree char *format = NULL;
                VmmsError error = {0};

                g_assert_false(vmms_disk_image_valid("relative.qcow2", &format, &error));
                g_assert_nonnull(strstr(error.message, "not an absolute path"));
                vmms_error_clear(&error);
                g_assert_false(vmms_disk_image_valid(dir, &format, &error));
                g_assert_nonnull(strstr(error.message, "not a regular file"));
                vmms_error_clear(&error);
                g_assert_false(vmms_disk_image_valid("/nonexistent/x.qcow2", &format, &error));
                g_assert_cmpint(error.code, ==, VMMS_ERROR_NOT_FOUND);
                vmms_error_clear(&error);
                g_assert_false(vmms_disk_image_valid("/tmp/a\tb", &format, &error));
                g_assert_cmpint(error.code, ==, VMMS_ERROR_INVALID_ARGUMENT);
                vmms_error_clear(&error);
        }
        g_rmdir(dir);
}

static void test_names_refuse_what_the_store_text_cannot_hold(void)
{
        const struct {
                const char *name;
                bool ok;
        } cases[] = {
                {"default", true},    {"vmms-test", true}, {"", false},      {"a/b", false},
                {"tab\there", false}, {"nl\nx", false},    {" lead", false}, {"x", true},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                VmmsError error = {0};

                g_assert_cmpint(vmms_switch_name_valid(cases[i].name, &error), ==, cases[i].ok);
                vmms_error_clear(&error);
        }
}

static void test_device_lists_round_trip_through_the_store_text(void)
{
        g_autoptr(GArray) drives = vmms_hard_disk_drives_new();
        g_autoptr(GArray) adapters = vmms_network_adapters_new();
        VmmsHardDiskDrive d = {.path = g_strdup("/srv/a b.qcow2"), .format = g_strdup("qcow2")};
        VmmsNetworkAdapter a = {.name = g_strdup("Network Adapter"), .switch_name = g_strdup("default")};
        g_autofree char *drives_text = NULL, *adapters_text = NULL;
        g_autoptr(GArray) drives2 = NULL;
        g_autoptr(GArray) adapters2 = NULL;
        char mac[18];

        g_array_append_val(drives, d);
        vmms_mac_address_generate(a.mac_address);
        g_assert_true(g_str_has_prefix(a.mac_address, "52:54:00:"));
        g_assert_cmpuint(strlen(a.mac_address), ==, 17);
        g_array_append_val(adapters, a);
        drives_text = vmms_hard_disk_drives_to_text(drives);
        adapters_text = vmms_network_adapters_to_text(adapters);
        drives2 = vmms_hard_disk_drives_from_text(drives_text);
        adapters2 = vmms_network_adapters_from_text(adapters_text);
        g_assert_cmpuint(drives2->len, ==, 1);
        g_assert_cmpstr(g_array_index(drives2, VmmsHardDiskDrive, 0).path, ==, "/srv/a b.qcow2");
        g_assert_cmpstr(g_array_index(drives2, VmmsHardDiskDrive, 0).format, ==, "qcow2");
        g_assert_cmpuint(adapters2->len, ==, 1);
        g_assert_cmpstr(g_array_index(adapters2, VmmsNetworkAdapter, 0).switch_name, ==, "default");
        g_assert_cmpstr(g_array_index(adapters2, VmmsNetworkAdapter, 0).mac_address, ==, a.mac_address);
        /* malformed lines are skipped, not half-read */
        g_clear_pointer(&adapters2, g_array_unref);
        adapters2 = vmms_network_adapters_from_text("only-a-name\nx\ty\tshort\n\n");
        g_assert_cmpuint(adapters2->len, ==, 0);
        vmms_mac_address_generate(mac);
        g_assert_cmpuint(strlen(mac), ==, 17);
}

static void test_rows_from_before_migration_8_keep_their_settings_and_have_no_devices(void)
{
        g_autofree char *dir = g_dir_make_tmp("vmms-devices-XXXXXX", NULL);
        g_autofree char *db = g_build_filename(dir, "vmms.db", NULL);
        g_autofree char *why = NULL;
        g_auto(VmmsVmDefinition) def = {0};
        g_autoptr(GPtrArray) defs = NULL;
        VmmsEventRecord event = {.kind = (char *)"created", .message = (char *)"created"};
        VmmsHardDiskDrive d = {.path = g_strdup("/srv/data.qcow2"), .format = g_strdup("qcow2")};
        VmmsStore *store = NULL;
        sqlite3 *raw;

        g_assert_cmpint(vmms_store_open(db, true, &store, &why), ==, 0);
        vmms_vm_definition_init_defaults(&def);
        g_strlcpy(def.id, "6f1c3a52-0000-4000-8000-000000000007", sizeof(def.id));
        def.name = g_strdup("old");
        g_free(def.engine);
        def.engine = g_strdup("libvirt");
        g_free(def.kernel_path);
        def.kernel_path = g_strdup("/boot/vmlinuz");
        def.processor.relative_weight = 321;
        g_array_append_val(def.hard_disk_drives, d);
        event.vm_id = def.id;
        event.vm_name = def.name;
        g_assert_cmpint(vmms_store_vm_insert(store, &def, &event), ==, 0);
        vmms_store_free(store);

        /* The file as a vmmsd before migration 8 left it. */
        g_assert_cmpint(sqlite3_open(db, &raw), ==, SQLITE_OK);
        g_assert_cmpint(sqlite3_exec(raw,
                                     "ALTER TABLE vms DROP COLUMN hard_disk_drives;"
                                     "ALTER TABLE vms DROP COLUMN network_adapters;"
                                     "ALTER TABLE checkpoints DROP COLUMN hard_disk_drives;"
                                     "ALTER TABLE checkpoints DROP COLUMN network_adapters;"
                                     "ALTER TABLE vms DROP COLUMN cpu_compatibility;"
                                     "ALTER TABLE checkpoints DROP COLUMN cpu_compatibility;"
                                     "ALTER TABLE vms DROP COLUMN highly_available;"
                                     "ALTER TABLE checkpoints DROP COLUMN highly_available;"
                                     "ALTER TABLE vms DROP COLUMN goal_seeking;"
                                     "ALTER TABLE checkpoints DROP COLUMN goal_seeking;"
                                     "PRAGMA user_version = 7;",
                                     NULL, NULL, NULL),
                        ==, SQLITE_OK);
        sqlite3_close(raw);

        g_assert_cmpint(vmms_store_open(db, false, &store, &why), ==, 0);
        g_assert_cmpint(vmms_store_vm_list(store, &defs), ==, 0);
        g_assert_cmpuint(defs->len, ==, 1);
        {
                const VmmsVmDefinition *got = defs->pdata[0];

                g_assert_cmpstr(got->name, ==, "old");
                g_assert_cmpstr(got->kernel_path, ==, "/boot/vmlinuz");
                g_assert_cmpuint(got->processor.relative_weight, ==, 321);
                g_assert_cmpuint(got->hard_disk_drives->len, ==, 0);
                g_assert_cmpuint(got->network_adapters->len, ==, 0);
        }
        vmms_store_free(store);
        g_unlink(db);
        {
                g_autofree char *id = g_strconcat(db, ".id", NULL);
                g_autofree char *wal = g_strconcat(db, "-wal", NULL);
                g_autofree char *shm = g_strconcat(db, "-shm", NULL);

                g_unlink(id);
                g_unlink(wal);
                g_unlink(shm);
        }
        g_rmdir(dir);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/devices/disk_images_are_probed_and_refused_by_name",
                        test_disk_images_are_probed_and_refused_by_name);
        g_test_add_func("/devices/names_refuse_what_the_store_text_cannot_hold",
                        test_names_refuse_what_the_store_text_cannot_hold);
        g_test_add_func("/devices/device_lists_round_trip_through_the_store_text",
                        test_device_lists_round_trip_through_the_store_text);
        g_test_add_func("/devices/rows_from_before_migration_8_keep_their_settings_and_have_no_devices",
                        test_rows_from_before_migration_8_keep_their_settings_and_have_no_devices);
        return g_test_run();
}
