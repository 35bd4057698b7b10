"""Plotly figures of the book: one style, labelled axes, readable in JupyterLab and as HTML.

    from cft_helpers.plots import des_heatmap
    des_heatmap(des_result).show()
"""

from __future__ import annotations

from typing import Any, Sequence

TEMPLATE = "plotly_white"
OURS, PAPER = "#1f77b4", "#7f7f7f"


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
    run (top; ``ours`` from ``similarity.similarity_vs_forgetting``) and the paper (bottom)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    def padded(values):  # room for the point labels on both sides
        v = [float(x) for x in values]
        if not v:
            return None
        span = max(max(v) - min(v), 0.1)
        return [min(v) - 0.35 * span, max(v) + 0.35 * span]

    def sides(values):  # labels point inwards so that none runs off the panel
        v = [float(x) for x in values]
        mid = (min(v) + max(v)) / 2 if v else 0.0
        return ["top left" if x > mid else "top right" for x in v]

    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.12, vertical_spacing=0.18,
                        subplot_titles=["this run: DES", "this run: MPD (normalised)",
                                        "paper: DES (Table 3)", "paper: MPD (Table 4, Mistral-7B)"])
    for col, key in ((1, "des"), (2, "mpd")):
        sub = ours[ours[key].notna()]
        fig.add_trace(go.Scatter(x=sub[key], y=sub["english_change"], mode="markers+text", text=sub["label"],
                                 textposition=sides(sub[key]), textfont={"size": 10},
                                 marker={"size": 11, "color": OURS}, name="this run",
                                 showlegend=col == 1), row=1, col=col)
        pts = [p for p in paper if p[key] is not None]
        fig.add_trace(go.Scatter(x=[p[key] for p in pts], y=[p["ea_change"] for p in pts],
                                 mode="markers+text", text=[f"{p['model'].split('-')[0]}: {p['pair']}" for p in pts],
                                 textposition=sides([p[key] for p in pts]),
                                 textfont={"size": 9}, marker={"size": 10, "color": PAPER, "symbol": "diamond"},
                                 name="paper", showlegend=col == 1), row=2, col=col)
        fig.update_xaxes(title_text="DES (higher: more similar)" if key == "des"
                         else "MPD / max (lower: more similar)", range=padded(sub[key]), row=1, col=col)
        fig.update_xaxes(title_text="DES" if key == "des" else "MPD / max",
                         range=padded([p[key] for p in pts]), row=2, col=col)
    fig.update_yaxes(title_text=our_change_label, row=1, col=1)
    fig.update_yaxes(title_text="change in EA, P2 - P1 (lower: forgot)", row=2, col=1)
    for row in (1, 2):
        for col in (1, 2):
            fig.add_hline(y=0, line={"color": "#cccccc", "dash": "dot"}, row=row, col=col)
    fig.update_layout(template=TEMPLATE, height=720, width=980,
                      title="Does phase-wise similarity predict what Phase 2 costs in English?")
    return fig
