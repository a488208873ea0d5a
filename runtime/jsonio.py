"""Reading a JSON object from a file, with errors the caller words for its own kind of file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_json_object(
    path: str | Path,
    missing: Callable[[], Exception],
    unreadable: Callable[[str], Exception],
) -> dict[str, Any]:
    """The JSON object in ``path``; raises ``missing()`` when there is no file and ``unreadable(why)``
    when it cannot be read, is not JSON, or is not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise missing() from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise unreadable(str(exc)) from None
    if not isinstance(data, dict):
        raise unreadable("it is not a JSON object")
    return data
