/* fuzz_http.c: libFuzzer target for the metrics endpoint's request parser (sl_http_parse): no crash, no read past
 * the input, one of its answers, and a request it calls complete is partial in every shorter prefix. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/services/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int known(int rc)
{
    return rc == SL_HTTP_COMPLETE || rc == SL_HTTP_PARTIAL || rc == 400 || rc == 414 || rc == 431 || rc == 505;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_http_request req;
    const char *buf = (const char *)data;
    int rc = sl_http_parse(buf, size, &req);
    if (!known(rc))
        abort();
    if (rc != SL_HTTP_COMPLETE)
        return 0;
    if (req.length == 0 || req.length > size || req.length > SL_HTTP_MAX_REQUEST || req.path[0] != '/' ||
        !req.method[0] || (req.minor != 0 && req.minor != 1))
        abort();
    /* complete at its blank line, and not before */
    sl_http_request again;
    if (sl_http_parse(buf, req.length, &again) != SL_HTTP_COMPLETE || again.length != req.length)
        abort();
    if (sl_http_parse(buf, req.length - 1, &again) != SL_HTTP_PARTIAL ||
        sl_http_parse(buf, req.length / 2, &again) != SL_HTTP_PARTIAL)
        abort();
    return 0;
}
