/* The boot command line: space-separated key=value tokens that choose the workload
 * and its parameters. Problems are recorded and printed after the boot banner.
 *
 * Parameters (a later token overrides an earlier one; a bad value keeps the default):
 *   workload=idle|cpu|memsoak|cache   what VP 0 runs (default idle)
 *   idle_period_ms=N     how often an idle VP wakes, 1..3600000 (default 1000)
 *   memsoak_mb=N         memsoak's target, 1..1048576 MiB (default 64); beyond visible
 *                        memory it pages to the synthetic disk
 *   memsoak_step_mb=N    memsoak grows this much per step, 1..1048576 (default 8)
 *   memsoak_step_ms=N    pause between steps, 0..3600000 (default 500)
 *   memsoak_hold_s=N     seconds memsoak holds its target before releasing all of
 *                        it, 0..86400; 0 holds forever (default 0)
 *   memsoak_rate_kb=N    once at its target, memsoak rewrites its pages in order at N KiB/s
 *                        (0..4194304; 0 writes none) and prints "memsoak: tick <reference
 *                        time> written <pages>" every 2 ms, instead of back-to-back passes
 *                        (default: unpaced)
 *   memsoak_hot_mb=N     memsoak's passes rewrite only its first N MiB (0..1048576); the rest,
 *                        touched once as it grows, stays cold (default: all of it)
 *   memsoak_pause_ms=N   pause between memsoak's passes, 0..3600000 (default 100)
 *   memsoak_hot_grow_s=N N seconds after reaching its target, memsoak's hot part grows to
 *                        the whole soak, 0..86400; 0 never (default 0)
 *   cache_mb=N           the cache workload's target size, 1..1048576 MiB (default 64)
 *   ignore_shutdown=0|1  1: the guest never answers the host's shutdown request, as a hung
 *                        guest would; only a turn-off stops it (default 0) */
#include "guest.h"

#define GUEST_MEMSOAK_MB_DEFAULT 64
#define GUEST_MEMSOAK_STEP_MB_DEFAULT 8
#define GUEST_MEMSOAK_STEP_MS_DEFAULT 500
#define GUEST_MEMSOAK_PAUSE_MS_DEFAULT 100
#define GUEST_CACHE_MB_DEFAULT 64
#define GUEST_IDLE_PERIOD_MS_DEFAULT 1000

static const char *const guest_workload_names[] = {
        [GUEST_WORKLOAD_IDLE] = "idle",
        [GUEST_WORKLOAD_CPU] = "cpu",
        [GUEST_WORKLOAD_MEMSOAK] = "memsoak",
        [GUEST_WORKLOAD_CACHE] = "cache",
};

const char *guest_workload_name(enum guest_workload workload)
{
        if ((unsigned)workload >= sizeof(guest_workload_names) / sizeof(guest_workload_names[0]))
                return "?";
        return guest_workload_names[workload];
}

static bool guest_token_is(const char *s, size_t len, const char *word)
{
        return strlen(word) == len && memcmp(s, word, len) == 0;
}

static void guest_cmdline_note(struct guest_config *config, bool bad_value, const char *key, size_t key_len)
{
        if (config->n_issues == GUEST_CMDLINE_MAX_ISSUES) {
                config->n_issues_dropped++;
                return;
        }
        config->issues[config->n_issues++] = (struct guest_cmdline_issue){bad_value, key, key_len};
}

static int guest_parse_workload(const char *value, size_t len, enum guest_workload *ret_workload)
{
        for (unsigned w = 0; w < sizeof(guest_workload_names) / sizeof(guest_workload_names[0]); w++) {
                if (guest_token_is(value, len, guest_workload_names[w])) {
                        *ret_workload = (enum guest_workload)w;
                        return 0;
                }
        }
        return -EINVAL;
}

static int guest_parse_bounded(const char *value, size_t len, uint64_t min, uint64_t max, uint64_t *ret_value)
{
        uint64_t v;
        int r = guest_parse_u64(value, len, &v);

        if (r < 0)
                return r;
        if (v < min || v > max)
                return -ERANGE;
        *ret_value = v;
        return 0;
}

/* Numeric parameters; the bounds keep byte and nanosecond products far from overflow. */
static const struct guest_cmdline_number {
        const char *key;
        size_t offset;
        uint64_t min, max;
} guest_cmdline_numbers[] = {
        {"memsoak_mb", offsetof(struct guest_config, memsoak_mb), 1, 1u << 20},
        {"memsoak_step_mb", offsetof(struct guest_config, memsoak_step_mb), 1, 1u << 20},
        {"memsoak_step_ms", offsetof(struct guest_config, memsoak_step_ms), 0, 3600u * 1000u},
        {"memsoak_hold_s", offsetof(struct guest_config, memsoak_hold_s), 0, 86400u},
        {"memsoak_rate_kb", offsetof(struct guest_config, memsoak_rate_kb), 0, 4u << 20},
        {"memsoak_hot_mb", offsetof(struct guest_config, memsoak_hot_mb), 0, 1u << 20},
        {"memsoak_pause_ms", offsetof(struct guest_config, memsoak_pause_ms), 0, 3600u * 1000u},
        {"memsoak_hot_grow_s", offsetof(struct guest_config, memsoak_hot_grow_s), 0, 86400u},
        {"cache_mb", offsetof(struct guest_config, cache_mb), 1, 1u << 20},
        {"idle_period_ms", offsetof(struct guest_config, idle_period_ms), 1, 3600u * 1000u},
        {"ignore_shutdown", offsetof(struct guest_config, ignore_shutdown), 0, 1},
};

static void guest_cmdline_apply(struct guest_config *config, const char *key, size_t key_len,
                                const char *value, size_t value_len, bool has_value)
{
        if (guest_token_is(key, key_len, "workload")) {
                if (!has_value || guest_parse_workload(value, value_len, &config->workload) < 0)
                        guest_cmdline_note(config, true, key, key_len);
                return;
        }
        for (size_t i = 0; i < sizeof(guest_cmdline_numbers) / sizeof(guest_cmdline_numbers[0]); i++) {
                const struct guest_cmdline_number *n = &guest_cmdline_numbers[i];

                if (!guest_token_is(key, key_len, n->key))
                        continue;
                if (!has_value || guest_parse_bounded(value, value_len, n->min, n->max,
                                                      (uint64_t *)((char *)config + n->offset)) < 0)
                        guest_cmdline_note(config, true, key, key_len);
                return;
        }
        guest_cmdline_note(config, false, key, key_len);
}

/* cmdline must stay alive while the recorded issues are printed (they point into it).
 * A bad value leaves that parameter at its default. */
void guest_cmdline_parse(const char *cmdline, struct guest_config *ret_config)
{
        struct guest_config config = {
                .workload = GUEST_WORKLOAD_IDLE,
                .memsoak_mb = GUEST_MEMSOAK_MB_DEFAULT,
                .memsoak_step_mb = GUEST_MEMSOAK_STEP_MB_DEFAULT,
                .memsoak_step_ms = GUEST_MEMSOAK_STEP_MS_DEFAULT,
                .memsoak_rate_kb = GUEST_MEMSOAK_UNPACED,
                .memsoak_hot_mb = GUEST_MEMSOAK_ALL_HOT,
                .memsoak_pause_ms = GUEST_MEMSOAK_PAUSE_MS_DEFAULT,
                .cache_mb = GUEST_CACHE_MB_DEFAULT,
                .idle_period_ms = GUEST_IDLE_PERIOD_MS_DEFAULT,
        };
        const char *p = cmdline;

        for (;;) {
                const char *key, *eq = NULL;
                size_t len;

                while (*p == ' ')
                        p++;
                if (!*p)
                        break;
                key = p;
                while (*p && *p != ' ') {
                        if (*p == '=' && !eq)
                                eq = p;
                        p++;
                }
                len = (size_t)(p - key);
                if (eq)
                        guest_cmdline_apply(&config, key, (size_t)(eq - key), eq + 1, (size_t)(p - eq - 1),
                                            true);
                else
                        guest_cmdline_apply(&config, key, len, NULL, 0, false);
        }
        *ret_config = config;
}

void guest_cmdline_print_issues(const struct guest_config *config)
{
        for (unsigned i = 0; i < config->n_issues; i++) {
                const struct guest_cmdline_issue *issue = &config->issues[i];

                if (issue->bad_value)
                        guest_printf("vmms-guest: bad value for %.*s\n", (int)issue->key_len, issue->key);
                else
                        guest_printf("vmms-guest: ignoring unknown parameter %.*s\n", (int)issue->key_len,
                                     issue->key);
        }
        if (config->n_issues_dropped)
                guest_printf("vmms-guest: %u more command line problems not shown\n",
                             config->n_issues_dropped);
}
