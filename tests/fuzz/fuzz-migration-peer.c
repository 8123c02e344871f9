/* Another host -> vmmsd: what a migration peer's frames carry that vmmsd parses before
 * any VM state moves (vmms-migration.h): the 12-byte frame header, and in an a{sv}
 * payload the processor compatibility vector an OFFER holds and the differences a
 * REFUSE lists (vmms-compat.c), read the way vmms-migration.c reads them (the payload
 * taken as an untrusted a{sv}, whatever its bytes). The input is the header, then the
 * payload.
 *
 * Checks beyond the sanitizers: a refusal names why; what is accepted survives its own
 * wire form unchanged (to_variant, then from_variant again: no differences), so the
 * reports built from it say what the peer sent. */
#include "fuzz.h"
#include "vmms-compat.h"
#include "vmms-migration.h"

static void check_vector(GVariantDict *d)
{
        g_autoptr(GVariant) wire = g_variant_dict_lookup_value(d, "processor", G_VARIANT_TYPE_VARDICT);
        g_auto(VmmsCompatVector) v = {0}, again = {0};
        g_autoptr(GVariant) out = NULL;
        g_autoptr(GPtrArray) differences = NULL;
        g_autofree char *why = NULL, *report = NULL;

        if (!wire)
                return;
        if (!vmms_compat_vector_from_variant(wire, &v, &why)) {
                FUZZ_CHECK(why && *why);
                return;
        }
        out = g_variant_ref_sink(vmms_compat_vector_to_variant(&v));
        FUZZ_CHECK(vmms_compat_vector_from_variant(out, &again, &why));
        differences = vmms_compat_compare(&v, &again);
        FUZZ_CHECK(differences->len == 0);
        g_clear_pointer(&differences, g_ptr_array_unref);
        /* Against an empty vector every field differs: the report of a hostile peer's. */
        {
                VmmsCompatVector empty = {.engine = (char *)"",
                                          .engine_version = (char *)"",
                                          .cpu_model = (char *)"",
                                          .cpuid_hash = (char *)""};

                differences = vmms_compat_compare(&v, &empty);
                report = vmms_compat_differences_format(differences, 8);
                FUZZ_CHECK(report);
        }
}

static void check_differences(GVariantDict *d)
{
        g_autoptr(GVariant) wire = g_variant_dict_lookup_value(d, "differences", G_VARIANT_TYPE("a(sss)"));
        g_autoptr(GPtrArray) differences = NULL, again = NULL;
        g_autoptr(GVariant) out = NULL;
        g_autofree char *why = NULL, *report = NULL;

        if (!wire)
                return;
        if (!vmms_compat_differences_from_variant(wire, &differences, &why)) {
                FUZZ_CHECK(why && *why);
                return;
        }
        out = g_variant_ref_sink(vmms_compat_differences_to_variant(differences));
        FUZZ_CHECK(vmms_compat_differences_from_variant(out, &again, &why));
        FUZZ_CHECK(again->len == differences->len);
        report = vmms_compat_differences_format(differences, 8);
        FUZZ_CHECK(report);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint8_t header[VMMS_MIGRATION_HEADER_SIZE] = {0};
        g_autofree char *why = NULL;
        g_autoptr(GBytes) payload = NULL;
        g_autoptr(GVariant) dict = NULL;
        g_autoptr(GVariantDict) d = NULL;
        VmmsMigrationFrame type;
        uint32_t length;

        fuzz_quiet_logs();
        memcpy(header, data, MIN(size, sizeof(header)));
        if (vmms_migration_header_parse(header, &type, &length, &why) < 0) {
                FUZZ_CHECK(why && *why);
                g_clear_pointer(&why, g_free);
        } else {
                FUZZ_CHECK(type > 0 && type < VMMS_MIGRATION_FRAME_COUNT &&
                           length <= VMMS_MIGRATION_PAYLOAD_MAX);
        }
        if (size <= sizeof(header))
                return 0;
        payload = g_bytes_new(data + sizeof(header), size - sizeof(header));
        dict = g_variant_ref_sink(g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, payload, FALSE));
        d = g_variant_dict_new(dict);
        check_vector(d);
        check_differences(d);
        return 0;
}
