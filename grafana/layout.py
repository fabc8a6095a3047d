#!/usr/bin/env python3
"""A picture of a dashboard's layout, drawn from its JSON (panel places, titles and, for
the wall's status tiles, the colour and word of a given value): for the README, where no
Grafana runs to take a screenshot. It is a drawing of the layout, not a screenshot.

    python grafana/layout.py grafana/dashboards/wall.json grafana/wall-layout.png
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

COLOURS = {"green": "#1b8a3a", "orange": "#e0761a", "red": "#c4162a", "yellow": "#d4b106",
           "blue": "#1f60c4"}
BACKGROUND, PANEL, TEXT = "#111217", "#181b1f", "#ccccdc"


def english(title: str) -> str:
    """The title without its Chinese part (the drawing's font has no CJK glyphs)."""
    return re.sub(r"\s*[\u3000-\u9fff（）：].*$", "", title)


def draw(board: dict, out: Path, value: float = 0) -> None:
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig = plt.figure(figsize=(16, 16 * rows / 24 * 0.45), dpi=90, facecolor=BACKGROUND)
    ax = fig.add_axes((0, 0, 1, 0.94))
    ax.set_xlim(0, 24)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    fig.text(0.01, 0.965, f"{english(board['title'])}  (layout drawn from "
             f"{out.stem.split('-')[0]}.json; tiles shown at value {value:g})",
             color=TEXT, fontsize=13, va="center")
    for panel in board["panels"]:
        g = panel["gridPos"]
        mappings = panel["fieldConfig"]["defaults"].get("mappings") or []
        shown = mappings[0]["options"].get(f"{value:g}") if mappings else None
        face = COLOURS.get(shown["color"], PANEL) if shown and panel["type"] == "stat" else PANEL
        ax.add_patch(FancyBboxPatch((g["x"] + 0.1, g["y"] + 0.1), g["w"] - 0.2, g["h"] - 0.2,
                                    boxstyle="round,pad=0,rounding_size=0.15",
                                    facecolor=face, edgecolor="#2c3235"))
        ax.text(g["x"] + 0.35, g["y"] + 0.8, english(panel["title"]), color="white",
                fontsize=10, va="center")
        middle = (g["x"] + g["w"] / 2, g["y"] + g["h"] / 2 + 0.3)
        if shown and panel["type"] == "stat":
            ax.text(*middle, english(shown["text"]) or shown["text"], color="white",
                    fontsize=26, ha="center", va="center", fontweight="bold")
        else:
            ax.text(*middle, f"[{panel['type']}]", color="#8e8e8e", fontsize=11,
                    ha="center", va="center")
    fig.savefig(out, facecolor=BACKGROUND)
    plt.close(fig)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
