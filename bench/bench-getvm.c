/* Get-VM over the unix socket: latency of single calls (p50/p99) and throughput of a
 * closed loop with N calls in flight, through the gRPC C core. Prints JSON. */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-json.h"
#include "vmms.pb-c.h"

typedef struct Call {
        grpc_call *call;
        grpc_metadata_array initial, trailing;
        grpc_byte_buffer *request, *response;
        grpc_status_code status;
        grpc_slice details;
        double started;
} Call;

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static grpc_byte_buffer *request_for(const char *name)
{
        Vmms__V1__VmRef ref = VMMS__V1__VM_REF__INIT;
        size_t len;
        grpc_slice slice;
        grpc_byte_buffer *bb;

        ref.vm = (char *)name;
        len = vmms__v1__vm_ref__get_packed_size(&ref);
        slice = grpc_slice_malloc(len);
        vmms__v1__vm_ref__pack(&ref, GRPC_SLICE_START_PTR(slice));
        bb = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        return bb;
}

static void call_start(grpc_channel *ch, grpc_completion_queue *cq, Call *c, const char *name)
{
        grpc_op ops[6];
        grpc_slice method = grpc_slice_from_static_string("/vmms.v1.Vmms/GetVm");

        memset(c, 0, sizeof(*c));
        memset(ops, 0, sizeof(ops));
        c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_metadata_array_init(&c->initial);
        grpc_metadata_array_init(&c->trailing);
        c->request = request_for(name);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = c->request;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial;
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &c->response;
        ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[5].data.recv_status_on_client.trailing_metadata = &c->trailing;
        ops[5].data.recv_status_on_client.status = &c->status;
        ops[5].data.recv_status_on_client.status_details = &c->details;
        c->started = now_s();
        grpc_call_start_batch(c->call, ops, 6, c, NULL);
}

/* Returns 0 if the call got a Vm back. */
static int call_finish(Call *c)
{
        int ok = c->status == GRPC_STATUS_OK && c->response != NULL;

        if (c->response)
                grpc_byte_buffer_destroy(c->response);
        grpc_byte_buffer_destroy(c->request);
        grpc_metadata_array_destroy(&c->initial);
        grpc_metadata_array_destroy(&c->trailing);
        grpc_slice_unref(c->details);
        grpc_call_unref(c->call);
        return ok ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
        const char *target = argc > 1 ? argv[1] : NULL;
        int n_vms = argc > 2 ? atoi(argv[2]) : 1000, samples = argc > 3 ? atoi(argv[3]) : 2000,
            in_flight = argc > 4 ? atoi(argv[4]) : 16;
        double duration = argc > 5 ? atof(argv[5]) : 3.0;
        grpc_channel_credentials *creds;
        grpc_completion_queue *cq;
        grpc_channel *ch;
        JsonObject *result;
        double *lat, t0, elapsed;
        long done = 0, failed = 0;
        char name[32];
        Call *calls;

        if (!target || n_vms < 1 || samples < 1 || in_flight < 1 || duration <= 0) {
                fprintf(stderr, "usage: bench-getvm unix:PATH [VMS SAMPLES IN_FLIGHT SECONDS]\n");
                return 2;
        }
        grpc_init();
        creds = grpc_insecure_credentials_create();
        ch = grpc_channel_create(target, creds, NULL);
        grpc_channel_credentials_release(creds);
        cq = grpc_completion_queue_create_for_next(NULL);
        lat = calloc((size_t)samples, sizeof(double));
        calls = calloc((size_t)in_flight, sizeof(Call));

        /* Latency: one call at a time, names spread over all VMs. */
        for (int i = 0; i < samples; i++) {
                grpc_event ev;

                snprintf(name, sizeof(name), "bench-%04d", i % n_vms);
                call_start(ch, cq, &calls[0], name);
                ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                lat[i] = now_s() - ((Call *)ev.tag)->started;
                failed += call_finish(ev.tag) < 0;
        }
        qsort(lat, (size_t)samples, sizeof(double), cmp_double);

        /* Throughput: keep `in_flight` calls going for `duration` seconds. */
        t0 = now_s();
        for (int i = 0; i < in_flight; i++) {
                snprintf(name, sizeof(name), "bench-%04d", i % n_vms);
                call_start(ch, cq, &calls[i], name);
        }
        for (int outstanding = in_flight; outstanding > 0;) {
                grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                Call *c = ev.tag;

                failed += call_finish(c) < 0;
                done++;
                if (now_s() - t0 < duration) {
                        snprintf(name, sizeof(name), "bench-%04ld", done % n_vms);
                        call_start(ch, cq, c, name);
                } else {
                        outstanding--;
                }
        }
        elapsed = now_s() - t0;
        result = json_object_new();
        json_object_set_string_member(result, "benchmark", "getvm");
        json_object_set_int_member(result, "vms", n_vms);
        json_object_set_int_member(result, "latency_samples", samples);
        json_object_set_double_member(result, "p50_us", lat[samples / 2] * 1e6);
        json_object_set_double_member(result, "p99_us", lat[samples * 99 / 100] * 1e6);
        json_object_set_double_member(result, "max_us", lat[samples - 1] * 1e6);
        json_object_set_int_member(result, "in_flight", in_flight);
        json_object_set_int_member(result, "calls", done);
        json_object_set_double_member(result, "seconds", elapsed);
        json_object_set_double_member(result, "calls_per_sec", (double)done / elapsed);
        json_object_set_int_member(result, "failed", failed);
        bench_json_print_object(result);
        grpc_channel_destroy(ch);
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(cq);
        free(lat);
        free(calls);
        grpc_shutdown();
        return failed ? 1 : 0;
}
