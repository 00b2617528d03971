/* width.c: terminal columns of UTF-8 text, from a small table of wide and zero-width ranges (after Markus
 * Kuhn's wcwidth): the common cases right without depending on the locale, which sluice never sets. */
#include "sluice/base/width.h"

#include <stdint.h>

#include "sluice/base/util.h"

typedef struct range {
    uint32_t first, last;
} range;

static const range zero_width[] = {
    {0x0300, 0x036F}, {0x0483, 0x0489}, {0x0591, 0x05BD}, {0x0610, 0x061A}, {0x064B, 0x065F},
    {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x200B, 0x200F}, {0x2028, 0x202E}, {0x2060, 0x2064},
    {0x20D0, 0x20FF}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}, {0xFEFF, 0xFEFF}, {0xE0100, 0xE01EF},
};

static const range wide[] = {
    {0x1100, 0x115F},   {0x231A, 0x231B},   {0x2329, 0x232A},   {0x23E9, 0x23EC},   {0x25FD, 0x25FE},
    {0x2614, 0x2615},   {0x26A1, 0x26A1},   {0x26AA, 0x26AB},   {0x2705, 0x2705},   {0x274C, 0x274C},
    {0x2E80, 0x303E},   {0x3041, 0x33FF},   {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},   {0xA000, 0xA4CF},
    {0xA960, 0xA97F},   {0xAC00, 0xD7A3},   {0xF900, 0xFAFF},   {0xFE10, 0xFE19},   {0xFE30, 0xFE6F},
    {0xFF00, 0xFF60},   {0xFFE0, 0xFFE6},   {0x16FE0, 0x18CFF}, {0x1B000, 0x1B2FF}, {0x1F004, 0x1F004},
    {0x1F0CF, 0x1F0CF}, {0x1F18E, 0x1F18E}, {0x1F191, 0x1F19A}, {0x1F200, 0x1F2FF}, {0x1F300, 0x1F64F},
    {0x1F680, 0x1F6FF}, {0x1F7E0, 0x1F7EB}, {0x1F900, 0x1F9FF}, {0x1FA70, 0x1FAFF}, {0x20000, 0x2FFFD},
    {0x30000, 0x3FFFD},
};

static int in(const range *r, size_t n, uint32_t code)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (code < r[mid].first)
            hi = mid;
        else if (code > r[mid].last)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

/* The columns of the character at s, and its length in *n. */
static size_t char_width(const char *s, size_t avail, size_t *n)
{
    uint32_t code;
    *n = sl_utf8_decode(s, avail, &code);
    if (*n == 0) {
        *n = 1;
        return 1;
    }
    if (in(zero_width, sizeof zero_width / sizeof zero_width[0], code))
        return 0;
    return in(wide, sizeof wide / sizeof wide[0], code) ? 2 : 1;
}

size_t sl_width_of(const char *s, size_t len)
{
    size_t cols = 0, n;
    for (size_t i = 0; i < len; i += n)
        cols += char_width(s + i, len - i, &n);
    return cols;
}

size_t sl_width_prefix(const char *s, size_t len, size_t cols)
{
    size_t used = 0, i = 0, n;
    while (i < len) {
        size_t w = char_width(s + i, len - i, &n);
        if (used + w > cols)
            break;
        used += w;
        i += n;
    }
    return i;
}
