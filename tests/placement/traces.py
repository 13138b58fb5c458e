"""Hand-made spot traces in the format of ``../shared/traces``, for the trace-driven local cloud."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

TRACE_START = datetime(2023, 2, 15, 22, 0, 0)


def write_trace(
    directory: Path, *, availability: dict[str, list[int]], prices: dict[str, list[float]], row_seconds: int
) -> tuple[Path, Path]:
    """Write ``<zone>_v100_1.csv`` files and a prices JSON under ``directory``; (availability dir, prices file)."""
    files = directory / "availability"
    files.mkdir(parents=True)
    for zone, rows in availability.items():
        lines = ["date,availability"]
        for row, available in enumerate(rows):
            lines.append(f"{(TRACE_START + timedelta(seconds=row * row_seconds)).isoformat(sep=' ')},{available}")
        (files / f"{zone}_v100_1.csv").write_text("\n".join(lines) + "\n")
    prices_file = directory / "prices.json"
    prices_file.write_text(json.dumps({f"{zone}_v100_1": series for zone, series in prices.items()}))
    return files, prices_file
