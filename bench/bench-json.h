/* The C benchmarks' output: one JSON document on stdout, written by json-glib. */
#pragma once

#include <json-glib/json-glib.h>

/* Prints node as one line of JSON and a newline. */
void bench_json_print(JsonNode *node);
/* The same for an object or an array, which it takes. */
void bench_json_print_object(JsonObject *object);
void bench_json_print_array(JsonArray *array);
