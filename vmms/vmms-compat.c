/* Processor compatibility vectors: hvd's answer, the migration wire form, and the
 * field-by-field comparison (vmms-compat.h). The comparison is exact: hosts agree on a
 * VM's processor only when everything a guest may have learned about it is equal. */
#include <string.h>

#include "vmms-compat.h"

static const char *const registers[4] = {"eax", "ebx", "ecx", "edx"};

void vmms_compat_vector_clear(VmmsCompatVector *v)
{
        g_clear_pointer(&v->engine, g_free);
        g_clear_pointer(&v->engine_version, g_free);
        g_clear_pointer(&v->cpu_model, g_free);
        g_clear_pointer(&v->cpuid_hash, g_free);
        g_clear_pointer(&v->cpuid, g_free);
        v->n_cpuid = 0;
}

void vmms_compat_vector_from_hv(const Vmms__Hv__CompatibilityVector *in, VmmsCompatVector *ret)
{
        VmmsCompatVector v = {
                .engine = g_strdup(in->engine),
                .engine_version = g_strdup(in->engine_version),
                .cpu_model = g_strdup(in->cpu_model),
                .cpuid_hash = g_strdup(in->cpuid_hash),
                .n_cpuid = in->n_cpuid,
                .guest_abi_version = in->guest_abi_version,
                .protocol_version = in->protocol_version,
                .normalized = in->normalized,
        };

        v.cpuid = g_new0(VmmsCompatLeaf, MAX(v.n_cpuid, 1));
        for (size_t i = 0; i < v.n_cpuid; i++)
                v.cpuid[i] = (VmmsCompatLeaf){
                        .leaf = in->cpuid[i]->leaf,
                        .subleaf = in->cpuid[i]->subleaf,
                        .regs = {in->cpuid[i]->eax, in->cpuid[i]->ebx, in->cpuid[i]->ecx, in->cpuid[i]->edx},
                };
        *ret = v;
}

GVariant *vmms_compat_vector_to_variant(const VmmsCompatVector *v)
{
        GVariantBuilder leaves;
        GVariantDict d;

        g_variant_builder_init(&leaves, G_VARIANT_TYPE("a(uuuuuu)"));
        for (size_t i = 0; i < v->n_cpuid; i++) {
                const VmmsCompatLeaf *l = &v->cpuid[i];

                g_variant_builder_add(&leaves, "(uuuuuu)", l->leaf, l->subleaf, l->regs[0], l->regs[1],
                                      l->regs[2], l->regs[3]);
        }
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "engine", "s", v->engine);
        g_variant_dict_insert(&d, "engine-version", "s", v->engine_version);
        g_variant_dict_insert(&d, "cpu-model", "s", v->cpu_model);
        g_variant_dict_insert(&d, "cpuid-hash", "s", v->cpuid_hash);
        g_variant_dict_insert_value(&d, "cpuid", g_variant_builder_end(&leaves));
        g_variant_dict_insert(&d, "guest-abi", "u", v->guest_abi_version);
        g_variant_dict_insert(&d, "hv-protocol", "u", v->protocol_version);
        g_variant_dict_insert(&d, "normalized", "b", v->normalized);
        return g_variant_dict_end(&d);
}

/* Printable ASCII, at most VMMS_COMPAT_STRING_MAX bytes: it is printed in reports. */
static bool peer_string(GVariantDict *d, const char *key, char **ret, char **ret_error)
{
        const char *s = NULL;

        if (!g_variant_dict_lookup(d, key, "&s", &s)) {
                *ret_error = g_strdup_printf("the peer's processor vector has no string '%s'", key);
                return false;
        }
        if (strlen(s) > VMMS_COMPAT_STRING_MAX) {
                *ret_error = g_strdup_printf("the peer's processor vector '%s' is longer than %d bytes", key,
                                             VMMS_COMPAT_STRING_MAX);
                return false;
        }
        for (const char *c = s; *c; c++)
                if (*c < 0x20 || *c > 0x7e) {
                        *ret_error =
                                g_strdup_printf("the peer's processor vector '%s' is not printable", key);
                        return false;
                }
        *ret = g_strdup(s);
        return true;
}

bool vmms_compat_vector_from_variant(GVariant *dict, VmmsCompatVector *ret, char **ret_error)
{
        g_auto(VmmsCompatVector) v = {0};
        g_autoptr(GVariantDict) d = NULL;
        g_autoptr(GVariant) leaves = NULL;
        gboolean normalized = FALSE;
        GVariantIter iter;
        VmmsCompatLeaf l;

        if (!g_variant_is_of_type(dict, G_VARIANT_TYPE_VARDICT)) {
                *ret_error = g_strdup("the peer's processor vector is not an a{sv}");
                return false;
        }
        d = g_variant_dict_new(dict);
        if (!peer_string(d, "engine", &v.engine, ret_error) ||
            !peer_string(d, "engine-version", &v.engine_version, ret_error) ||
            !peer_string(d, "cpu-model", &v.cpu_model, ret_error) ||
            !peer_string(d, "cpuid-hash", &v.cpuid_hash, ret_error))
                return false;
        if (!g_variant_dict_lookup(d, "guest-abi", "u", &v.guest_abi_version) ||
            !g_variant_dict_lookup(d, "hv-protocol", "u", &v.protocol_version) ||
            !g_variant_dict_lookup(d, "normalized", "b", &normalized)) {
                *ret_error = g_strdup("the peer's processor vector lacks guest-abi u, hv-protocol u or "
                                      "normalized b");
                return false;
        }
        v.normalized = normalized;
        leaves = g_variant_dict_lookup_value(d, "cpuid", G_VARIANT_TYPE("a(uuuuuu)"));
        if (!leaves) {
                *ret_error = g_strdup("the peer's processor vector has no cpuid table a(uuuuuu)");
                return false;
        }
        if (g_variant_n_children(leaves) > VMMS_COMPAT_CPUID_MAX) {
                *ret_error = g_strdup_printf("the peer's processor vector lists %zu CPUID leaves; at most %d",
                                             g_variant_n_children(leaves), VMMS_COMPAT_CPUID_MAX);
                return false;
        }
        v.cpuid = g_new0(VmmsCompatLeaf, MAX(g_variant_n_children(leaves), 1));
        g_variant_iter_init(&iter, leaves);
        while (g_variant_iter_next(&iter, "(uuuuuu)", &l.leaf, &l.subleaf, &l.regs[0], &l.regs[1], &l.regs[2],
                                   &l.regs[3])) {
                for (size_t i = 0; i < v.n_cpuid; i++)
                        if (v.cpuid[i].leaf == l.leaf && v.cpuid[i].subleaf == l.subleaf) {
                                *ret_error = g_strdup_printf("the peer's processor vector lists CPUID leaf "
                                                             "0x%08x.%u twice",
                                                             l.leaf, l.subleaf);
                                return false;
                        }
                v.cpuid[v.n_cpuid++] = l;
        }
        *ret = v;
        v = (VmmsCompatVector){0};
        return true;
}

void vmms_compat_difference_free(VmmsCompatDifference *d)
{
        if (!d)
                return;
        g_free(d->field);
        g_free(d->source);
        g_free(d->destination);
        g_free(d);
}

static void add(GPtrArray *out, char *field, char *source, char *destination)
{
        VmmsCompatDifference *d = g_new0(VmmsCompatDifference, 1);

        d->field = field;
        d->source = source;
        d->destination = destination;
        g_ptr_array_add(out, d);
}

static void compare_string(GPtrArray *out, const char *field, const char *source, const char *destination)
{
        if (g_strcmp0(source, destination) != 0)
                add(out, g_strdup(field), g_strdup(source ? source : ""),
                    g_strdup(destination ? destination : ""));
}

static void compare_number(GPtrArray *out, const char *field, uint32_t source, uint32_t destination)
{
        if (source != destination)
                add(out, g_strdup(field), g_strdup_printf("%u", source), g_strdup_printf("%u", destination));
}

static const VmmsCompatLeaf *find_leaf(const VmmsCompatVector *v, uint32_t leaf, uint32_t subleaf)
{
        for (size_t i = 0; i < v->n_cpuid; i++)
                if (v->cpuid[i].leaf == leaf && v->cpuid[i].subleaf == subleaf)
                        return &v->cpuid[i];
        return NULL;
}

static char *leaf_name(const VmmsCompatLeaf *l)
{
        return g_strdup_printf("cpuid 0x%08x.%u", l->leaf, l->subleaf);
}

/* The source's leaves in its order, register by register, then the leaves only the
 * destination lists. */
static void compare_cpuid(GPtrArray *out, const VmmsCompatVector *source, const VmmsCompatVector *destination)
{
        for (size_t i = 0; i < source->n_cpuid; i++) {
                const VmmsCompatLeaf *s = &source->cpuid[i], *d = find_leaf(destination, s->leaf, s->subleaf);

                if (!d) {
                        add(out, leaf_name(s), g_strdup("listed"), g_strdup("absent"));
                        continue;
                }
                for (int r = 0; r < 4; r++)
                        if (s->regs[r] != d->regs[r])
                                add(out,
                                    g_strdup_printf("cpuid 0x%08x.%u %s", s->leaf, s->subleaf, registers[r]),
                                    g_strdup_printf("0x%08x", s->regs[r]),
                                    g_strdup_printf("0x%08x", d->regs[r]));
        }
        for (size_t i = 0; i < destination->n_cpuid; i++) {
                const VmmsCompatLeaf *d = &destination->cpuid[i];

                if (!find_leaf(source, d->leaf, d->subleaf))
                        add(out, leaf_name(d), g_strdup("absent"), g_strdup("listed"));
        }
}

GPtrArray *vmms_compat_compare(const VmmsCompatVector *source, const VmmsCompatVector *destination)
{
        GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)vmms_compat_difference_free);

        compare_string(out, "engine", source->engine, destination->engine);
        compare_string(out, "engine_version", source->engine_version, destination->engine_version);
        compare_string(out, "cpu_model", source->cpu_model, destination->cpu_model);
        if (source->normalized != destination->normalized)
                add(out, g_strdup("normalized"), g_strdup(source->normalized ? "true" : "false"),
                    g_strdup(destination->normalized ? "true" : "false"));
        compare_number(out, "guest_abi_version", source->guest_abi_version, destination->guest_abi_version);
        compare_number(out, "protocol_version", source->protocol_version, destination->protocol_version);
        compare_string(out, "cpuid_hash", source->cpuid_hash, destination->cpuid_hash);
        compare_cpuid(out, source, destination);
        return out;
}

char *vmms_compat_differences_format(GPtrArray *differences, size_t max)
{
        g_autoptr(GString) s = g_string_new(NULL);
        guint shown = MIN(differences->len, (guint)max);

        for (guint i = 0; i < shown; i++) {
                const VmmsCompatDifference *d = differences->pdata[i];

                g_string_append_printf(s, "%s%s: %s on the source, %s on the destination", i ? "; " : "",
                                       d->field, d->source, d->destination);
        }
        if (differences->len > shown)
                g_string_append_printf(s, "; and %u more", differences->len - shown);
        return g_string_free(g_steal_pointer(&s), FALSE);
}

GVariant *vmms_compat_differences_to_variant(GPtrArray *differences)
{
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a(sss)"));
        for (guint i = 0; i < differences->len; i++) {
                const VmmsCompatDifference *d = differences->pdata[i];

                g_variant_builder_add(&b, "(sss)", d->field, d->source, d->destination);
        }
        return g_variant_builder_end(&b);
}

static bool printable(const char *s)
{
        if (strlen(s) > VMMS_COMPAT_STRING_MAX)
                return false;
        for (; *s; s++)
                if (*s < 0x20 || *s > 0x7e)
                        return false;
        return true;
}

bool vmms_compat_differences_from_variant(GVariant *array, GPtrArray **ret, char **ret_error)
{
        g_autoptr(GPtrArray) out =
                g_ptr_array_new_with_free_func((GDestroyNotify)vmms_compat_difference_free);
        const char *field, *source, *destination;
        GVariantIter iter;

        if (!g_variant_is_of_type(array, G_VARIANT_TYPE("a(sss)"))) {
                *ret_error = g_strdup("the peer's differences are not an a(sss)");
                return false;
        }
        if (g_variant_n_children(array) > VMMS_COMPAT_DIFFERENCES_MAX) {
                *ret_error = g_strdup_printf("the peer lists %zu differences; at most %d",
                                             g_variant_n_children(array), VMMS_COMPAT_DIFFERENCES_MAX);
                return false;
        }
        g_variant_iter_init(&iter, array);
        while (g_variant_iter_next(&iter, "(&s&s&s)", &field, &source, &destination)) {
                if (!printable(field) || !printable(source) || !printable(destination)) {
                        *ret_error = g_strdup("the peer's differences hold unprintable or overlong text");
                        return false;
                }
                add(out, g_strdup(field), g_strdup(source), g_strdup(destination));
        }
        *ret = g_steal_pointer(&out);
        return true;
}
