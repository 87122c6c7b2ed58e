"""argparse value types shared by the subcommands, so every command words its errors the same way."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A whole number >= 0 (e.g. --limit, --bootstrap)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive(text: str) -> int:
    """A whole number >= 1 (e.g. --batch-size, --size, --workers)."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def finding_kinds(text: str) -> tuple[str, ...]:
    """Comma-separated synthetic finding kinds (e.g. --findings hardware,fracture)."""
    from xraylens.data.synthetic.findings import check_kinds

    try:
        return check_kinds([k.strip() for k in text.split(",") if k.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


FORMAT_CHOICES = ("auto", "mura", "fracatlas", "grazpedwri")


def add_format(parser: argparse.ArgumentParser, default: str | None = "auto", what: str = "") -> None:
    """``--format``: which dataset layout --data / ROOT holds (detected from the folder by default)."""
    parser.add_argument("--format", choices=FORMAT_CHOICES, default=default,
                        help="dataset layout: mura (MURA v1.1), fracatlas (FracAtlas), grazpedwri (GRAZPEDWRI-DX) "
                             f"or auto, detected from the folder (default: {what or default})")
