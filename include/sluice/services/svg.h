/* svg.h: small inline SVG charts over time for `report`: lines, steps, dots, bars and lanes of intervals. */
#ifndef SLUICE_SVG_H
#define SLUICE_SVG_H

#include "sluice/base/util.h"

typedef enum sl_svg_style { SL_SVG_LINE, SL_SVG_STEP, SL_SVG_DOTS, SL_SVG_BARS } sl_svg_style;

/* One series: n points (x in seconds from the chart's start, y in the
 * chart's unit), drawn in style and color ("#1f77b4"). name is escaped. */
typedef struct sl_svg_series {
    const char *name;
    const char *color;
    sl_svg_style style;
    const double *x, *y;
    size_t n;
} sl_svg_series;

/* One interval of a lane chart: [from, to) seconds from the start. */
typedef struct sl_svg_span {
    double from, to;
    int lane;
} sl_svg_span;

/* Append a <figure> with a chart of the series over [0, span] seconds:
 * measure names it (id "chart-MEASURE", data-measure="MEASURE"), title and
 * unit label it (escaped). Axes, ticks and a legend; a chart with no point
 * says so. start_label names the time 0 ("2026-11-24T08:04:57Z"). */
void sl_svg_chart(sl_buf *out, const char *measure, const char *title, const char *unit, const char *start_label,
                  double span, const sl_svg_series *series, size_t nseries);

/* The same for intervals, one lane per name (lanes[i], colors[i]). */
void sl_svg_lanes(sl_buf *out, const char *measure, const char *title, const char *start_label, double span,
                  const char *const *lanes, const char *const *colors, size_t nlanes, const sl_svg_span *spans,
                  size_t nspans);

/* Append s for HTML text or an attribute value: & < > " ' as entities,
 * and controls or bytes that are not UTF-8 as visible escapes. */
void sl_html_escape(sl_buf *out, const char *s);

#endif
