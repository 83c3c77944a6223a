"""Matplotlib figures for the A/B report, returned as inline ``data:image/png;base64`` URIs (no network)."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from campaigns.stats import ArmRate, SegmentComparison

CONTROL_COLOUR = "#6b7280"
ARM_COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2")
DPI = 110


def _figure(height: float) -> tuple[Figure, Axes]:
    return plt.subplots(figsize=(7.0, height))


def _literal(text: str) -> str:
    """Text shown as written: '$' would start matplotlib mathtext (segment names like "$100 - $200")."""
    return text.replace("$", r"\$")


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def arm_colours(arms: list[str], control_arm: str) -> dict[str, str]:
    others = [a for a in arms if a != control_arm]
    colours = {a: ARM_COLOURS[i % len(ARM_COLOURS)] for i, a in enumerate(others)}
    colours[control_arm] = CONTROL_COLOUR
    return colours


def _ok(value: float) -> bool:
    return value is not None and not math.isnan(value)


def conversion_by_arm(arms: list[ArmRate], *, control_arm: str, title: str, confidence: float = 0.95) -> str:
    """Horizontal dot plot: conversion rate per arm with its Wilson interval."""
    shown = [a for a in arms if _ok(a.rate)]
    colours = arm_colours([a.arm for a in arms], control_arm)
    fig, ax = _figure(0.6 * max(len(shown), 1) + 1.2)
    for y, a in enumerate(shown):
        ax.errorbar(
            a.rate * 100,
            y,
            xerr=[[(a.rate - a.ci_low) * 100], [(a.ci_high - a.rate) * 100]],
            fmt="o",
            color=colours[a.arm],
            capsize=5,
            markersize=7,
            linewidth=2,
        )
        ax.annotate(
            f"{a.rate:.2%}", (a.rate * 100, y), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=9
        )
    ax.set_yticks(range(len(shown)), [_literal(f"{a.arm}\n(n={a.n:,})") for a in shown])
    ax.set_ylim(-0.7, len(shown) - 0.3)
    ax.set_xlabel(f"conversion rate (%) with {confidence:.0%} Wilson interval")
    ax.set_title(_literal(title))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def lift_by_segment(segments: list[SegmentComparison], *, control_arm: str, title: str) -> str:
    """Forest plot: absolute lift vs control (percentage points) per segment and arm, with intervals."""
    rows = [s for s in segments if _ok(s.comparison.abs_ci_low)]
    arms = sorted({s.comparison.arm for s in rows})
    colours = arm_colours([*arms, control_arm], control_arm)
    fig, ax = _figure(0.38 * max(len(rows), 1) + 1.4)
    labels = []
    for y, s in enumerate(rows):
        c = s.comparison
        ax.errorbar(
            c.abs_lift * 100,
            y,
            xerr=[[(c.abs_lift - c.abs_ci_low) * 100], [(c.abs_ci_high - c.abs_lift) * 100]],
            fmt="s" if s.p_adjusted < 0.05 else "o",
            color=colours[c.arm],
            capsize=3,
            markersize=5,
        )
        labels.append(_literal(f"{s.segment} · {c.arm}"))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(_literal(f"absolute lift vs {control_arm} (percentage points); squares: BH-adjusted p < 0.05"))
    ax.set_title(_literal(title))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def cumulative_over_time(timeline: pl.DataFrame, *, control_arm: str, by_exposure: bool, title: str) -> str:
    """Step plot of the cumulative conversion rate per arm over days."""
    arms = sorted(timeline["arm"].unique().to_list())
    colours = arm_colours([*arms, control_arm], control_arm)
    fig, ax = _figure(3.6)
    last_day = int(timeline["day"].cast(pl.Int64).to_numpy().max(initial=0))
    for arm in arms:
        part = timeline.filter(pl.col("arm") == arm).sort("day")
        days = [0, *part["day"].to_list(), last_day]
        rates = [0.0, *(part["cumulative_rate"] * 100).to_list()]
        rates.append(rates[-1])
        ax.step(days, rates, where="post", label=_literal(arm), color=colours[arm], linewidth=2)
    ax.set_xlabel("days since exposure" if by_exposure else "days since first conversion")
    ax.set_ylabel("cumulative conversion rate (%)")
    ax.set_title(_literal(title))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _png(fig)
