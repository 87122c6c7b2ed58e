"""`xraylens evaluate` (not built yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("evaluate", help="(coming soon)")
