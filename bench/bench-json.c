/* One line of JSON on stdout, for bench/run's scripts to parse. */
#include <stdio.h>

#include "bench-json.h"

void bench_json_print(JsonNode *node)
{
        g_autoptr(JsonGenerator) generator = json_generator_new();
        g_autofree char *text = NULL;

        json_generator_set_root(generator, node);
        text = json_generator_to_data(generator, NULL);
        printf("%s\n", text);
        fflush(stdout);
}

void bench_json_print_object(JsonObject *object)
{
        g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), object);

        json_object_unref(object);
        bench_json_print(node);
}

void bench_json_print_array(JsonArray *array)
{
        g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), array);

        json_array_unref(array);
        bench_json_print(node);
}
