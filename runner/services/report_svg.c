/* report_svg.c: inline SVG charts for `report`: no script, no font, nothing fetched; every text escaped. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sluice/services/svg.h"

#define W      900
#define H      220
#define LEFT   70
#define RIGHT  20
#define TOP    14
#define BOTTOM 34
#define PLOT_W (W - LEFT - RIGHT)
/* Points a series draws at most: a job of 100,000 chunks keeps a page of
 * a few hundred kB; each drawn point stands for its stride's highest. */
#define MAX_DRAWN 2000
#define PLOT_H    (H - TOP - BOTTOM)

void sl_html_escape(sl_buf *out, const char *s)
{
    sl_buf shown = {0};
    sl_buf_add_visible(&shown, s ? s : "", s ? strlen(s) : 0, 1);
    for (const char *p = shown.data ? shown.data : ""; *p; p++) {
        switch (*p) {
        case '&': sl_buf_adds(out, "&amp;"); break;
        case '<': sl_buf_adds(out, "&lt;"); break;
        case '>': sl_buf_adds(out, "&gt;"); break;
        case '"': sl_buf_adds(out, "&quot;"); break;
        case '\'': sl_buf_adds(out, "&#39;"); break;
        default: sl_buf_addc(out, *p);
        }
    }
    sl_buf_free(&shown);
}

/* A round step for about four ticks up to max. */
static double nice_step(double max)
{
    if (max <= 0)
        return 1;
    double raw = max / 4, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

static void format_elapsed(double secs, double step, char *out, size_t outsz)
{
    long s = (long)(secs + 0.5);
    if (step < 1)
        snprintf(out, outsz, "+%.2gs", secs);
    else if (s < 60)
        snprintf(out, outsz, "+%lds", s);
    else if (s < 3600)
        snprintf(out, outsz, "+%ldm%02lds", s / 60, s % 60);
    else
        snprintf(out, outsz, "+%ldh%02ldm", s / 3600, s / 60 % 60);
}

static void format_value(double v, char *out, size_t outsz)
{
    if (fabs(v) >= 1e6)
        snprintf(out, outsz, "%.3gM", v / 1e6);
    else if (fabs(v) >= 1e4)
        snprintf(out, outsz, "%.3gk", v / 1e3);
    else
        snprintf(out, outsz, "%g", v);
}

static void open_figure(sl_buf *out, const char *measure, const char *title, int height)
{
    sl_buf_adds(out, "<figure class=\"chart\" id=\"chart-");
    sl_html_escape(out, measure);
    sl_buf_adds(out, "\" data-measure=\"");
    sl_html_escape(out, measure);
    sl_buf_adds(out, "\"><figcaption>");
    sl_html_escape(out, title);
    sl_buf_printf(out,
                  "</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                  "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"",
                  W, height, W, height);
    sl_html_escape(out, title);
    sl_buf_adds(out, "\">");
}

static void time_axis(sl_buf *out, double span, const char *start_label, int plot_bottom)
{
    sl_buf_printf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"axis\"/>", LEFT, plot_bottom, W - RIGHT,
                  plot_bottom);
    double step = nice_step(span);
    for (double t = 0; span > 0 && t <= span * 1.0001; t += step) {
        double x = LEFT + t / span * PLOT_W;
        char label[32];
        format_elapsed(t, step, label, sizeof label);
        sl_buf_printf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"tick\"/>", x, plot_bottom, x,
                      plot_bottom + 4);
        sl_buf_printf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>", x, plot_bottom + 16, label);
    }
    sl_buf_printf(out, "<text x=\"%d\" y=\"%d\" class=\"note\">from ", LEFT, plot_bottom + 30);
    sl_html_escape(out, start_label);
    sl_buf_adds(out, "</text>");
}

static void legend(sl_buf *out, const sl_svg_series *series, size_t n)
{
    int x = W - RIGHT - 10;
    for (size_t i = n; i-- > 0;) {
        int width = 14 + 7 * (int)strlen(series[i].name);
        x -= width;
        sl_buf_printf(out, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/>", x, TOP - 10,
                      series[i].color);
        sl_buf_printf(out, "<text x=\"%d\" y=\"%d\">", x + 13, TOP);
        sl_html_escape(out, series[i].name);
        sl_buf_adds(out, "</text>");
        x -= 10;
    }
}

/* The highest y of points [i, i + stride) of s, at the first one's x. */
static void stride_point(const sl_svg_series *s, size_t i, size_t stride, double *x, double *y)
{
    *x = s->x[i];
    *y = s->y[i];
    for (size_t k = i + 1; k < i + stride && k < s->n; k++)
        if (s->y[k] > *y)
            *y = s->y[k];
}

static void draw_series(sl_buf *out, const sl_svg_series *s, double span, double ymax)
{
    double xs = span > 0 ? PLOT_W / span : 0, ys = ymax > 0 ? PLOT_H / ymax : 0;
    int bottom = TOP + PLOT_H;
    size_t stride = s->n > MAX_DRAWN ? (s->n + MAX_DRAWN - 1) / MAX_DRAWN : 1;
    double px, py;
    if (s->style == SL_SVG_DOTS || s->style == SL_SVG_BARS) {
        double bw = s->n > 1 && span > 0 ? (s->x[1] - s->x[0]) * xs * 0.8 : 4;
        for (size_t i = 0; i < s->n; i += stride) {
            stride_point(s, i, stride, &px, &py);
            double x = LEFT + px * xs, y = bottom - py * ys;
            if (s->style == SL_SVG_DOTS)
                sl_buf_printf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>", x, y, s->color);
            else if (py > 0)
                sl_buf_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>", x, y,
                              bw < 1 ? 1 : bw, bottom - y, s->color);
        }
        return;
    }
    sl_buf_printf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", s->color);
    double last_y = 0;
    for (size_t i = 0; i < s->n; i += stride) {
        stride_point(s, i, stride, &px, &py);
        double x = LEFT + px * xs, y = bottom - py * ys;
        if (s->style == SL_SVG_STEP && i > 0)
            sl_buf_printf(out, "%.1f,%.1f ", x, last_y);
        sl_buf_printf(out, "%.1f,%.1f ", x, y);
        last_y = y;
    }
    sl_buf_adds(out, "\"/>");
}

void sl_svg_chart(sl_buf *out, const char *measure, const char *title, const char *unit, const char *start_label,
                  double span, const sl_svg_series *series, size_t nseries)
{
    double ymax = 0;
    size_t points = 0;
    for (size_t i = 0; i < nseries; i++)
        for (size_t j = 0; j < series[i].n; j++, points++)
            if (series[i].y[j] > ymax)
                ymax = series[i].y[j];
    double step = nice_step(ymax);
    ymax = ymax > 0 ? ceil(ymax / step) * step : 1;
    open_figure(out, measure, title, H);
    int bottom = TOP + PLOT_H;
    for (double v = 0; v <= ymax * 1.0001; v += step) {
        double y = bottom - v / ymax * PLOT_H;
        char label[32];
        format_value(v, label, sizeof label);
        sl_buf_printf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>", LEFT, y, W - RIGHT, y);
        sl_buf_printf(out, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>", LEFT - 6, y + 4, label);
    }
    sl_buf_printf(out, "<text x=\"12\" y=\"%d\" transform=\"rotate(-90 12 %d)\" text-anchor=\"middle\">",
                  TOP + PLOT_H / 2, TOP + PLOT_H / 2);
    sl_html_escape(out, unit);
    sl_buf_adds(out, "</text>");
    time_axis(out, span, start_label, bottom);
    if (points == 0)
        sl_buf_printf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" class=\"note\">nothing recorded</text>",
                      LEFT + PLOT_W / 2, TOP + PLOT_H / 2);
    for (size_t i = 0; i < nseries; i++)
        draw_series(out, &series[i], span, ymax);
    legend(out, series, nseries);
    sl_buf_adds(out, "</svg></figure>\n");
}

void sl_svg_lanes(sl_buf *out, const char *measure, const char *title, const char *start_label, double span,
                  const char *const *lanes, const char *const *colors, size_t nlanes, const sl_svg_span *spans,
                  size_t nspans)
{
    int lane_h = 22, height = TOP + (int)(nlanes > 0 ? nlanes : 1) * lane_h + BOTTOM + 6;
    int bottom = height - BOTTOM;
    open_figure(out, measure, title, height);
    for (size_t l = 0; l < nlanes; l++) {
        sl_buf_printf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", LEFT - 6, TOP + (int)l * lane_h + 15);
        sl_html_escape(out, lanes[l]);
        sl_buf_adds(out, "</text>");
    }
    double xs = span > 0 ? PLOT_W / span : 0;
    for (size_t i = 0; i < nspans; i++) {
        const sl_svg_span *s = &spans[i];
        double x = LEFT + s->from * xs, w = (s->to - s->from) * xs;
        sl_buf_printf(out,
                      "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>%.1f s</title></rect>",
                      x, TOP + s->lane * lane_h + 3, w < 1 ? 1 : w, lane_h - 6, colors[s->lane], s->to - s->from);
    }
    if (nspans == 0)
        sl_buf_printf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" class=\"note\">never held back</text>",
                      LEFT + PLOT_W / 2, TOP + 15);
    time_axis(out, span, start_label, bottom);
    sl_buf_adds(out, "</svg></figure>\n");
}
