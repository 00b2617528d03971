/* fuzz_snap.c: libFuzzer target for the checkpoint's undo-record decoder (sl_snap_decode): no crash, and what it
 * accepts encodes back to the very same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/checkpoints/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_snap snap;
    memset(&snap, 0, sizeof snap);
    snap.chunk_no = 7;
    memcpy(snap.kind, "cols", 5);
    if (sl_snap_decode(data, size, &snap) != 0)
        return 0;
    if (snap.chunk_no != 7 || strcmp(snap.kind, "cols") != 0)
        abort();
    /* One form per record: a decoder that accepted two spellings of a record
     * (or lost a byte of one) would not give the bytes back. */
    sl_buf again = {0};
    sl_snap_encode(&snap, &again);
    if (again.len != size || memcmp(again.data, data, size) != 0)
        abort();
    sl_buf_free(&again);
    sl_snap_free(&snap);
    return 0;
}
