"""Plotly figures of the book: one style, labelled axes, readable in JupyterLab and as HTML.

    from cft_helpers.plots import des_heatmap
    des_heatmap(des_result).show()

A builder's ``layout.width``/``height`` is the PNG/SVG export size; the interactive views (a
notebook after ``use_notebook_renderer``, the HTML files of ``save_figures``) drop the width and
take their container's. The HTML files load plotly.js from a shared ``plotly.min.js`` beside them
by default, so a figures folder opens offline.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from cft_helpers.progress import NOTEBOOK_ENV

TEMPLATE = "plotly_white"
OURS, PAPER = "#1f77b4", "#7f7f7f"



class _DroppedMessage(logging.Filter):
    """choreographer 1.4 (kaleido's browser channel) logs a traceback when it reads a message it
    cannot decode, ignores it, and the figure is written all the same. Left in, that traceback
    reads like a failure in the notebooks' output; dropped, and only that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "JSONError decoding message" not in record.getMessage()


_DROPPED = _DroppedMessage()


def _quiet_kaleido() -> None:
    """Add the filter to choreographer's pipe logger, once, after choreographer made it (its
    logger class has methods a plain logging.Logger lacks: asking for the name first breaks it)."""
    try:
        import choreographer.channels.pipe  # noqa: F401  (registers the logger)
    except ImportError:  # no kaleido: nothing to quiet
        return
    logger = logging.getLogger("choreographer.channels.pipe")
    if _DROPPED not in logger.filters:
        logger.addFilter(_DROPPED)


def des_heatmap(result: dict[str, Any], title: str = "Dataset Embedding Similarity (DES)"):
    """The DES matrix of ``similarity.des_matrix`` as an annotated heatmap."""
    import plotly.graph_objects as go

    names = list(result["matrix"])
    z = [[result["matrix"][a][b] for b in names] for a in names]
    sd = result.get("sd", {})
    text = [[f"{z[i][j]:.3f}" + (f"<br>±{sd[a][b]:.3f}" if a != b and a in sd else "")
             for j, b in enumerate(names)] for i, a in enumerate(names)]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}",
                               colorscale="Blues", zmin=min(0.0, min(map(min, z))), zmax=1.0,
                               colorbar={"title": "DES"}))
    fig.update_layout(title=f"{title}<br><sup>{result['embedder']}, n={result['n']}, seed={result['seed']}, "
                            f"± bootstrap sd</sup>", template=TEMPLATE, height=420, width=520,
                      yaxis={"autorange": "reversed"})
    return fig


def similarity_vs_forgetting(ours, paper: Sequence[dict], our_change_label: str):
    """Four panels: DES and MPD (columns) against the change in English after Phase 2, for this
    run (top; ``ours`` from ``similarity.similarity_vs_forgetting``, with the change's interval in
    columns ``change_low`` / ``change_high`` when given: the findings' intervals) and the paper
    (bottom). Labels are placed so that none overlaps another or leaves its panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.12, vertical_spacing=0.22,
                        subplot_titles=["this run: DES", "this run: MPD (normalised)",
                                        "paper: DES (Table 3)", "paper: MPD (Table 4, Mistral-7B)"])
    fig.update_layout(template=TEMPLATE, height=760, width=980, margin=PANEL_MARGIN,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.13, "x": 0},
                      title="Does phase-wise similarity predict what Phase 2 costs in English?"
                            "<br><sup>this run: each change with its 95% interval, as in the findings</sup>")
    placed = {}
    for col, key in ((1, "des"), (2, "mpd")):
        sub = ours[ours[key].notna()]
        ys = [float(v) for v in sub["english_change"]]
        lows = list(sub["change_low"]) if "change_low" in sub else [None] * len(ys)
        highs = list(sub["change_high"]) if "change_high" in sub else [None] * len(ys)
        has = all(v is not None and v == v for v in [*lows, *highs]) and bool(ys)
        error = {"type": "data", "symmetric": False, "array": [h - y for h, y in zip(highs, ys)],
                 "arrayminus": [y - lo for lo, y in zip(lows, ys)], "color": OURS, "thickness": 1.2} if has else None
        fig.add_trace(go.Scatter(x=sub[key], y=ys, mode="markers", text=list(sub["label"]), error_y=error,
                                 marker={"size": 11, "color": OURS}, name="this run (95% interval)",
                                 showlegend=col == 1), row=1, col=col)
        x_range = padded_range(sub[key], pad=0.45, minimum_span=0.1)
        y_range = padded_range([*ys, 0.0], lows if has else (), highs if has else (), pad=0.45, minimum_span=0.02)
        fig.update_xaxes(title_text="DES (higher: more similar)" if key == "des"
                         else "MPD / max (lower: more similar)", range=x_range, row=1, col=col)
        fig.update_yaxes(range=y_range, row=1, col=col)
        placed[(1, col)] = add_point_labels(fig, 1, col, list(sub[key]), ys, list(sub["label"]), [OURS] * len(ys),
                                            x_range, y_range, [(None, None, lo, hi) for lo, hi in zip(lows, highs)]
                                            if has else ())
        pts = [p for p in paper if p[key] is not None]
        px, py = [p[key] for p in pts], [p["ea_change"] for p in pts]
        fig.add_trace(go.Scatter(x=px, y=py, mode="markers", text=[f"{p['model'].split('-')[0]}: {p['pair']}" for p in pts],
                                 marker={"size": 10, "color": PAPER, "symbol": "diamond"},
                                 name="paper", showlegend=col == 1), row=2, col=col)
        x_range, y_range = padded_range(px, pad=0.45, minimum_span=0.1), padded_range([*py, 0.0], pad=0.3)
        fig.update_xaxes(title_text="DES" if key == "des" else "MPD / max", range=x_range, row=2, col=col)
        fig.update_yaxes(range=y_range, row=2, col=col)
        placed[(2, col)] = add_point_labels(fig, 2, col, px, py, [f"{p['model'].split('-')[0]}: {p['pair']}" for p in pts],
                                            [PAPER] * len(pts), x_range, y_range)
    fig.update_yaxes(title_text=our_change_label, row=1, col=1)
    fig.update_yaxes(title_text="change in EA, P2 - P1 (lower: forgot)", row=2, col=1)
    fig.update_xaxes(automargin=False)   # the plot area stays where the labels were placed
    fig.update_yaxes(automargin=False)
    for row in (1, 2):
        for col in (1, 2):
            fig.add_hline(y=0, line={"color": "#cccccc", "dash": "dot"}, row=row, col=col)
    fig._cft_labels = placed   # for tests: where each label went
    return fig


# --------------------------------------------------------------------------- labels that do not collide

LABEL_FONT = 9            # px, the point labels' font size
_CHAR_W, _LINE_H = 0.62, 1.35   # a label's box: width per character and height, in font sizes


def label_box(text: str, cx: float, cy: float, font: float = LABEL_FONT) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) in pixels a label of ``text`` takes, centred at (cx, cy)."""
    w, h = _CHAR_W * font * len(text) + 4, _LINE_H * font
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _candidates(text: str) -> list[tuple[float, float]]:
    """Offsets (dx, dy; y down) from a point to its label's centre, tried in order: beside the
    point (its near edge 10 px away; at the point's height, then a line above or below), above
    and below it, then farther out in eight directions (a line then joins label and point)."""
    half_w = (_CHAR_W * LABEL_FONT * len(text) + 4) / 2
    near = [(sx * (half_w + 10), dy) for dy in (0, -14, 14) for sx in (1, -1)] + [(0, -14), (0, 14)]
    far = []
    for r in (30, 48, 66, 90):
        for cx, cy in ((0, -1), (0, 1), (1, 0), (-1, 0), (0.7, -0.7), (-0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)):
            far.append((r * cx + (half_w if cx > 0 else -half_w if cx < 0 else 0), r * cy))
    return near + far


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(xy_px: Sequence[tuple[float, float]], texts: Sequence[str], width_px: float, height_px: float,
                 marker_px: float = 6.0, obstacles: Sequence[tuple[float, float, float, float]] = ()
                 ) -> list[tuple[float, float]]:
    """Pixel offsets (dx, dy, y down) for each point's label such that no label leaves the panel
    (``width_px`` x ``height_px``, points in its pixel coordinates) or overlaps another label, a
    point's marker or an ``obstacle`` (error bars): greedily, points in the order given, each at
    its first free place of ``_candidates`` (the least crowded one when none is free)."""
    blocked = [(x - marker_px, y - marker_px, x + marker_px, y + marker_px) for x, y in xy_px] + list(obstacles)
    boxes: list[tuple[float, float, float, float]] = []
    out = []
    for (x, y), text in zip(xy_px, texts):
        best, best_cost = (0.0, -14.0), None
        for dx, dy in _candidates(text):
            box = label_box(text, x + dx, y + dy)
            outside = max(0.0, -box[0]) + max(0.0, box[2] - width_px) + max(0.0, -box[1]) + max(0.0, box[3] - height_px)
            cost = 1000 * outside + sum(_overlap(box, b) for b in boxes) + sum(_overlap(box, m) for m in blocked)
            if cost == 0:
                best = (dx, dy)
                break
            if best_cost is None or cost < best_cost:
                best, best_cost = (dx, dy), cost
        boxes.append(label_box(text, x + best[0], y + best[1]))
        out.append((float(best[0]), float(best[1])))
    return out


def padded_range(values: Sequence[float], lows: Sequence[float | None] = (), highs: Sequence[float | None] = (),
                 pad: float = 0.18, minimum_span: float = 0.05) -> list[float]:
    """An axis range around the values and their interval ends, with ``pad`` of the span on each
    side for the labels."""
    v = [float(x) for x in [*values, *lows, *highs] if x is not None and x == x]
    if not v:
        return [0.0, 1.0]
    lo, hi = min(v), max(v)
    span = max(hi - lo, minimum_span)
    return [lo - pad * span, hi + pad * span]


# Fixed margins (no automatic growth): the labels' pixel geometry is computed from them.
PANEL_MARGIN = {"l": 70, "r": 30, "t": 110, "b": 130, "autoexpand": False}


def _panel_px(fig, col: int, row: int = 1) -> tuple[float, float]:
    """Width and height in pixels of one subplot's plot area (fixed margins, legend below)."""
    axis = "" if (row, col) == (1, 1) else str(fig.get_subplot(row, col).xaxis.plotly_name.removeprefix("xaxis"))
    xd = fig.layout[f"xaxis{axis}"].domain
    yd = fig.layout[f"yaxis{axis}"].domain
    plot_w = fig.layout.width - PANEL_MARGIN["l"] - PANEL_MARGIN["r"]
    plot_h = fig.layout.height - PANEL_MARGIN["t"] - PANEL_MARGIN["b"]
    return (xd[1] - xd[0]) * plot_w, (yd[1] - yd[0]) * plot_h


def add_point_labels(fig, row: int, col: int, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                     colours: Sequence[str], x_range: Sequence[float], y_range: Sequence[float],
                     bars: Sequence[tuple | None] = ()) -> list[dict]:
    """Label each point with an annotation placed by ``place_labels`` inside the subplot, clear of
    its error bars (``bars``: per point (x_low, x_high, y_low, y_high) in data units, None where
    it has none); returns what was placed (text, the point in pixels, the label's centre offset,
    the bars' boxes) for checks."""
    width, height = _panel_px(fig, col, row)

    def px(x, y):
        return ((x - x_range[0]) / (x_range[1] - x_range[0]) * width,
                (y_range[1] - y) / (y_range[1] - y_range[0]) * height)

    to_px = [px(x, y) for x, y in zip(xs, ys)]
    obstacles = []
    for (x, y), bar in zip(zip(xs, ys), bars):
        if not bar:
            continue
        x_lo, x_hi, y_lo, y_hi = bar
        cx, cy = px(x, y)
        if y_lo is not None and y_hi is not None:
            obstacles.append((cx - 4, px(x, y_hi)[1], cx + 4, px(x, y_lo)[1]))
        if x_lo is not None and x_hi is not None:
            obstacles.append((px(x_lo, y)[0], cy - 4, px(x_hi, y)[0], cy + 4))
    offsets = place_labels(to_px, texts, width, height, obstacles=obstacles)
    sub = fig.get_subplot(row, col)
    xref, yref = sub.xaxis.plotly_name.replace("axis", ""), sub.yaxis.plotly_name.replace("axis", "")
    placed = []
    for x, y, text, colour, (dx, dy), point in zip(xs, ys, texts, colours, offsets, to_px):
        far = abs(dx) > 40 or abs(dy) > 20
        fig.add_annotation(x=x, y=y, xref=xref, yref=yref, text=text, showarrow=True, ax=dx, ay=dy,
                           arrowwidth=0.6, arrowcolor="#bbbbbb" if far else "rgba(0,0,0,0)", arrowhead=0,
                           font={"size": LABEL_FONT, "color": colour}, xanchor="center", yanchor="middle")
        placed.append({"text": text, "point_px": point, "offset": (dx, dy), "panel_px": (width, height),
                       "obstacles": obstacles})
    return placed


# --------------------------------------------------------------------------- representations (07, 08)

PHASE_COLOURS = {"Phase 1": "#1f77b4", "Phase 2": "#d62728"}
KIND_COLOURS = {"start": "#7f7f7f", "phase1": "#1f77b4", "phase2": "#d62728", "mixture": "#2ca02c",
                "reverse": "#9467bd", "mitigation": "#ff7f0e"}


def layer_projection_figure(projections: dict[str, Any], title: str = ""):
    """Figure 1: the layer-mean vectors of a Phase-1 and a Phase-2 model projected together.

    ``projections``: {method: {pair_label: {"p1": name, "p2": name, "p1_xy": [[x, y], ...],
    "p2_xy": ...}}}; one row per method (t-SNE, UMAP), one column per pair."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = list(projections)
    pairs = list(next(iter(projections.values())))
    fig = make_subplots(rows=len(methods), cols=len(pairs), horizontal_spacing=0.08, vertical_spacing=0.12,
                        subplot_titles=[f"{METHOD_NAMES.get(m, m)}: {p}" for m in methods for p in pairs])
    for r, method in enumerate(methods, start=1):
        for c, pair in enumerate(pairs, start=1):
            d = projections[method][pair]
            for phase, key in (("Phase 1", "p1"), ("Phase 2", "p2")):
                xy = d[f"{key}_xy"]
                fig.add_trace(go.Scatter(
                    x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers",
                    marker={"color": PHASE_COLOURS[phase], "size": [5 + 9 * i / max(len(xy) - 1, 1) for i in range(len(xy))],
                            "opacity": 0.8, "line": {"width": 0.5, "color": "white"}},
                    name=phase, legendgroup=phase, showlegend=r == 1 and c == 1,
                    text=[f"{d[key]}, layer {i}" for i in range(len(xy))], hoverinfo="text"), row=r, col=c)
            fig.update_xaxes(showticklabels=False, row=r, col=c)
            fig.update_yaxes(showticklabels=False, row=r, col=c)
    fig.update_layout(template=TEMPLATE, height=380 * len(methods) + 60, width=480 * len(pairs) + 80,
                      title=title or "Layer-mean activations on MT-Bench prompts, before and after Phase 2"
                                     "<br><sup>one point per layer; marker size grows with depth</sup>")
    return fig


METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def covariance_change_figure(curves: dict[str, list[float]], title: str, mode: str = "per_layer",
                             highlight: str | None = None):
    """Figure 2 / D3: per layer, ||Σ_P1 - Σ_P2||_F for each arm (lines); ``literal`` mode draws
    one bar per arm. ``highlight`` (e.g. the vanilla arm) is drawn thick and dashed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    if mode == "literal":
        fig.add_trace(go.Bar(x=list(curves), y=[v[0] for v in curves.values()],
                             marker={"color": [palette[i % len(palette)] for i in range(len(curves))]}))
        fig.update_yaxes(title_text="||Σ_P1 - Σ_P2||_F (paper's formula on X)")
    else:
        for i, (label, ys) in enumerate(curves.items()):
            fig.add_trace(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines+markers", name=label,
                                     line={"color": palette[i % len(palette)],
                                           "width": 4 if label == highlight else 2,
                                           "dash": "dash" if label == highlight else "solid"},
                                     marker={"size": 5}))
        fig.update_xaxes(title_text="layer")
        fig.update_yaxes(title_text="||Σ_P1 - Σ_P2||_F (per-layer covariance over prompts)", type="log")
    fig.update_layout(template=TEMPLATE, height=460, width=860, title=title, legend={"title": "arm"})
    return fig


def cross_lingual_figure(panels: dict[str, dict[str, Any]], title: str = ""):
    """Figure 4: per-sentence activations on parallel sentences, one panel per model, coloured by
    language (English drawn larger, in black). ``panels``: {model: {"xy", "langs", "layer",
    "retrieval": {lang: share}}}."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(panels)
    titles = []
    for n in names:
        r = panels[n].get("retrieval") or {}
        mean = sum(r.values()) / len(r) if r else float("nan")
        titles.append(f"{n}, layer {panels[n]['layer']}: translation retrieval {mean:.2f}")
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles, horizontal_spacing=0.06)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a"]
    for c, n in enumerate(names, start=1):
        p = panels[n]
        langs = list(dict.fromkeys(p["langs"]))
        others = [lang for lang in langs if lang != "en"]
        for lang in ["en", *others]:
            idx = [i for i, x in enumerate(p["langs"]) if x == lang]
            fig.add_trace(go.Scatter(
                x=[p["xy"][i][0] for i in idx], y=[p["xy"][i][1] for i in idx], mode="markers", name=lang,
                legendgroup=lang, showlegend=c == 1,
                marker={"size": 10 if lang == "en" else 7, "symbol": "diamond" if lang == "en" else "circle",
                        "color": "black" if lang == "en" else palette[others.index(lang) % len(palette)],
                        "opacity": 0.85},
                text=[f"{lang} #{j}" for j in range(len(idx))], hoverinfo="text"), row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
        fig.update_yaxes(showticklabels=False, row=1, col=c)
    fig.update_layout(template=TEMPLATE, height=520, width=560 * len(names) + 120, legend={"title": "language"},
                      title=title or "Parallel sentences: English vs other languages (t-SNE of one layer)")
    return fig


def ability_tradeoff_figure(ours: Sequence[dict], paper: Sequence[dict]):
    """EA against MA for every arm of this run (first panel) and the paper's published points,
    one panel per paper model (their scales differ from ours: compare where the arms fall
    relative to each other, not the values).

    Each point: {"label", "kind" (start, phase1, phase2, mixture, reverse, mitigation), "EA", "MA",
    "from": (EA, MA) of the model it was trained from, or None}; this run's points may carry
    "EA_low", "EA_high", "MA_low", "MA_high" (the findings' 95% intervals, drawn as error bars);
    paper points carry "model", and a "note" where the paper misprinted them (drawn as crosses,
    the note in the hover text). Arrows join a Phase-2 (or reverse second-phase) model to its
    Phase-1 model. Labels are placed so that none overlaps another or leaves its panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    models = list(dict.fromkeys(p["model"] for p in paper))
    panels = [("this run (95% intervals)", list(ours))] + [(f"paper: {m}", [p for p in paper if p["model"] == m])
                                                           for m in models]
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07,
                        subplot_titles=[t for t, _ in panels])
    fig.update_layout(template=TEMPLATE, height=600, width=520 * len(panels) + 140, margin=PANEL_MARGIN,
                      legend={"title": "arm kind", "orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
                      title="English against multilingual ability for every arm<br><sup>arrows: Phase 1 -> "
                            "Phase 2; mitigations start from the Instruct Phase-1 model</sup>")

    def bar(pts, q):
        if not pts or not all(p.get(f"{q}_low") is not None and p.get(f"{q}_high") is not None for p in pts):
            return None
        return {"type": "data", "symmetric": False, "array": [p[f"{q}_high"] - p[q] for p in pts],
                "arrayminus": [p[q] - p[f"{q}_low"] for p in pts], "thickness": 1, "width": 3}

    shown = set()
    placed = {}
    for col, (_, points) in enumerate(panels, start=1):
        for kind, colour in KIND_COLOURS.items():
            pts = [p for p in points if p["kind"] == kind]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p["EA"] for p in pts], y=[p["MA"] for p in pts], mode="markers", text=[p["label"] for p in pts],
                error_x=bar(pts, "EA"), error_y=bar(pts, "MA"),
                # a point with a "note" (a paper misprint: printed and recomputed) is drawn as a cross
                marker={"color": colour, "size": 10, "line": {"width": 0.5, "color": "white"},
                        "symbol": ["x" if p.get("note") else "circle" for p in pts]},
                hovertext=[f"{p['label']}: EA {p['EA']:.3f}, MA {p['MA']:.3f}"
                           + (f"<br>{p['note']}" if p.get("note") else "") for p in pts], hoverinfo="text",
                name=kind, legendgroup=kind, showlegend=kind not in shown), row=1, col=col)
            shown.add(kind)
        axis = "" if col == 1 else str(col)
        for p in points:
            if p.get("from") and p["kind"] in ("phase2", "reverse"):
                fig.add_annotation(x=p["EA"], y=p["MA"], ax=p["from"][0], ay=p["from"][1], xref=f"x{axis}",
                                   yref=f"y{axis}", axref=f"x{axis}", ayref=f"y{axis}", showarrow=True, text="",
                                   arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#999999")
        x_range = padded_range([p["EA"] for p in points], [p.get("EA_low") for p in points],
                               [p.get("EA_high") for p in points], pad=0.25, minimum_span=0.05)
        y_range = padded_range([p["MA"] for p in points], [p.get("MA_low") for p in points],
                               [p.get("MA_high") for p in points], pad=0.25, minimum_span=0.05)
        fig.update_xaxes(title_text="English Ability (EA)", range=x_range, row=1, col=col)
        fig.update_yaxes(title_text="Multilingual Ability (MA)" if col == 1 else None, range=y_range, row=1, col=col)
        placed[(1, col)] = add_point_labels(fig, 1, col, [p["EA"] for p in points], [p["MA"] for p in points],
                                            [p["label"] for p in points],
                                            [KIND_COLOURS.get(p["kind"], OURS) for p in points], x_range, y_range,
                                            [(p.get("EA_low"), p.get("EA_high"), p.get("MA_low"), p.get("MA_high"))
                                             for p in points])
    fig.update_xaxes(automargin=False)   # the plot area stays where the labels were placed
    fig.update_yaxes(automargin=False)
    fig._cft_labels = placed   # for tests: where each label went
    return fig


def representation_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """Figures 1, 2, D3 and 4 from ``representations.save_representation_summary``'s record, by stable name."""
    mode = summary.get("covariance_mode", "per_layer")
    which = "per-layer covariance of per-prompt means" if mode == "per_layer" else "the paper's formula on X"
    figs = {"fig1_layer_projections": layer_projection_figure(summary["projections"])}
    figs["fig2_covariance_change"] = covariance_change_figure(
        summary["phase2_covariance"], mode=mode,
        title=f"Change in representation covariance, Phase 1 -> Phase 2 (MT-Bench prompts)<br><sup>{which}</sup>")
    if summary.get("mitigation_covariance"):
        vanilla = summary.get("mitigation_baseline")
        figs["figD3_covariance_change_mitigations"] = covariance_change_figure(
            summary["mitigation_covariance"], mode=mode, highlight=vanilla,
            title=f"Change in representation covariance under each mitigation (Phase 2 from the same start)"
                  f"<br><sup>{which}; dashed: vanilla Phase 2</sup>")
    if summary.get("cross_lingual"):
        figs["fig4_cross_lingual"] = cross_lingual_figure(summary["cross_lingual"])
    return figs


# --------------------------------------------------------------------------- export


def chrome_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium to render PNG and SVG."""
    import shutil

    if os.environ.get("BROWSER_PATH") and Path(os.environ["BROWSER_PATH"]).exists():
        return True
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def interactive_dict(fig) -> dict[str, Any]:
    """The figure as a dict for the interactive views (notebook, HTML): without its fixed width, so
    that it takes its container's width (a fixed one cut the third panel of ``ea_vs_ma_tradeoff``
    off in JupyterLab). The builders' ``layout.width`` stays the PNG/SVG export width."""
    d = fig if isinstance(fig, dict) else fig.to_dict()
    d = {**d, "layout": {k: v for k, v in (d.get("layout") or {}).items() if k != "width"}}
    d["layout"]["autosize"] = True
    return d


def export_size(fig) -> tuple[int, int]:
    """(width, height) of the PNG/SVG export: the builder's layout size, plotly's default else."""
    layout = (fig if isinstance(fig, dict) else fig.to_dict()).get("layout") or {}
    return int(layout.get("width") or 700), int(layout.get("height") or 500)


PLOTLYJS = "plotly.min.js"   # the name plotly's include_plotlyjs="directory" refers to


def write_plotlyjs(directory: Path | str) -> Path:
    """The plotly.js bundle of the installed plotly as ``<directory>/plotly.min.js``, rewritten
    when it differs: plotly's own "directory" mode only writes a missing one, so a copy left by
    an older plotly would silently draw the new figures with an old plotly.js."""
    from plotly.offline import get_plotlyjs

    path = Path(directory) / PLOTLYJS
    bundle = get_plotlyjs().encode("utf-8")
    if not path.exists() or path.read_bytes() != bundle:
        tmp = path.with_name(f".{PLOTLYJS}.tmp")
        tmp.write_bytes(bundle)
        os.replace(tmp, path)
    return path


def save_figures(figures: dict[str, Any], directory: Path | str, formats: Sequence[str] = ("html", "png", "svg"),
                 plotlyjs: str = "directory", scale: float = 2.0) -> dict[str, list[Path]]:
    """Write each figure as ``<directory>/<name>.<format>``; stable names, atomic writes.

    HTML is always written, at the page's width; ``plotlyjs`` "directory" (the default: one
    shared ``plotly.min.js`` beside the HTML files, referenced relatively, rather than its
    ~4.8 MB inlined into each file; the folder opens offline), "inline" or "cdn" (needs network
    to view). PNG and SVG, at the builder's fixed size, need a Chrome (Debian: ``apt-get install
    chromium``); without one they are skipped with a warning, never half-written. Returns
    name -> files (``plotly.min.js`` is not listed: it belongs to no one figure)."""
    import warnings

    import plotly.io as pio

    if plotlyjs not in ("directory", "inline", "cdn"):
        raise ValueError(f"plotlyjs must be 'directory', 'inline' or 'cdn', not {plotlyjs!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {name: [] for name in figures}
    if "html" in formats and figures and plotlyjs == "directory":
        write_plotlyjs(directory)   # before the HTML: plotly then finds it and writes no copy itself
    for name, fig in figures.items():
        if "html" in formats:
            path = directory / f"{name}.html"
            tmp = directory / f".{name}.tmp.html"
            pio.write_html(interactive_dict(fig), tmp, include_plotlyjs=plotlyjs if plotlyjs != "inline" else True,
                           full_html=True)
            os.replace(tmp, path)
            written[name].append(path)
    static = [f for f in formats if f in ("png", "svg")]
    if static and not chrome_available():
        warnings.warn(f"no Chrome/Chromium found: {static} not written (HTML only). Install one "
                      "(Debian: apt-get install chromium) or set BROWSER_PATH.", stacklevel=2)
        return written
    for fmt in static:
        names = list(figures)
        tmps = [directory / f".{n}.tmp.{fmt}" for n in names]
        # one browser session for all figures of a format: much faster than one per figure
        figs = [figures[n] for n in names]
        # the batch writer ignores layout sizes unless given: pass each figure's own
        sizes = [export_size(f) for f in figs]
        _quiet_kaleido()
        pio.write_images(figs, tmps, format=fmt, scale=scale if fmt == "png" else 1,
                         width=[w for w, _ in sizes], height=[h for _, h in sizes])
        for n, tmp in zip(names, tmps):
            os.replace(tmp, directory / f"{n}.{fmt}")
            written[n].append(directory / f"{n}.{fmt}")
    return written


# --------------------------------------------------------------------------- notebook display


NOTEBOOK_RENDERER = "cft_notebook"


def _notebook_renderer_class():
    from plotly.io.base_renderers import MimetypeRenderer, PlotlyRenderer

    class NotebookRenderer(MimetypeRenderer):
        """The interactive figure at its container's width (JupyterLab, VS Code: plotly's own
        mimetype, which they rank first) and, with ``png``, the same figure as a PNG at its
        export size, which viewers without a kernel (GitHub, nbviewer) show instead."""

        def __init__(self, png: bool):
            self.png = png

        def to_mimebundle(self, fig_dict):
            import base64

            import plotly.io as pio

            bundle = PlotlyRenderer().to_mimebundle(interactive_dict(fig_dict))
            if self.png:
                width, height = export_size(fig_dict)
                _quiet_kaleido()
                png = pio.to_image(fig_dict, format="png", width=width, height=height, scale=1, validate=False)
                bundle["image/png"] = base64.b64encode(png).decode("ascii")
            return bundle

    return NotebookRenderer


def use_notebook_renderer(png: bool = True) -> str:
    """Show every plotly figure of this kernel through ``NotebookRenderer``: interactive at the
    container's width, plus a PNG copy with ``png`` (``figures.notebook_png``) where a Chrome is
    found (without one: a warning, interactive only). A notebook calls it once; returns the
    renderer's name, now ``plotly.io.renderers.default``.

    The PNG copy is for the notebooks the book executes (``CFT_NOTEBOOK`` set): their copies in
    the run store are what GitHub and nbviewer show. In JupyterLab it is left out: given both,
    the jupyterlab-plotly extension shows the PNG at export size until the mouse enters it."""
    import warnings

    import plotly.io as pio

    png = png and bool(os.environ.get(NOTEBOOK_ENV))
    if png and not chrome_available():
        warnings.warn("no Chrome/Chromium found: the notebook's figures carry no PNG copy (viewers without "
                      "a kernel show none). Install one (Debian: apt-get install chromium) or set BROWSER_PATH.",
                      stacklevel=2)
        png = False
    pio.renderers[NOTEBOOK_RENDERER] = _notebook_renderer_class()(png)
    pio.renderers.default = NOTEBOOK_RENDERER
    return NOTEBOOK_RENDERER


def written_files(written: dict[str, list[Path]]) -> dict[str, list[str]]:
    """``save_figures``'s result as figure -> file names."""
    return {name: [p.name for p in paths] for name, paths in written.items()}


def written_table(written: dict[str, list[Path]]):
    """``save_figures``'s result as a one-column DataFrame: figure -> formats written."""
    import pandas as pd

    return pd.DataFrame({name: ", ".join(p.suffix[1:] for p in paths) for name, paths in written.items()},
                        index=["written"]).T
