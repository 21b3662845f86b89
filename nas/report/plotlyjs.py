"""plotly.js, one copy per output folder: a page references `plotly.min.js` beside it instead of
embedding its ~4.8 MB, so the report and the confusion pages of one folder share a copy, and every
page still opens from disk without a network."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_path

BUNDLE = "plotly.min.js"
INCLUDE = "directory"  # plotly's include_plotlyjs: <script src="plotly.min.js">, the file beside the page
TAG = f'src="{BUNDLE}"'  # how a page written so references it


def write_bundle(folder: Path) -> Path:
    """Write (or refresh) `folder/plotly.min.js` with the installed plotly's own copy, atomically.

    Refreshed whenever it differs: a copy left by an older plotly could not draw a newer one's figures.
    """
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs().encode("utf-8")
    path = folder / BUNDLE
    try:
        if path.is_file() and path.stat().st_size == len(js) and path.read_bytes() == js:
            return path
    except OSError:
        pass  # unreadable: written anew below
    with atomic_path(path) as tmp:
        tmp.write_bytes(js)
    return path
