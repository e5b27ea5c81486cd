"""Tabular exports shared by the single-model cost and the comparison report."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Dict, List


def _cell(value: Any) -> Any:
    """Lists (output shapes) as compact JSON, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return value


def csv_text(records: List[Dict[str, Any]]) -> str:
    """Records (dicts with the same keys) as CSV with a header line."""
    if not records:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in record.items()} for record in records)
    return buffer.getvalue()


def dataframe(records: List[Dict[str, Any]]) -> Any:
    """Records as a pandas DataFrame; ImportError naming the package when pandas is missing."""
    try:
        import pandas
    except ImportError as error:
        raise ImportError("to_dataframe() needs pandas: pip install pandas "
                          "(or use to_dict() / to_csv(), which need nothing)") from error
    return pandas.DataFrame.from_records(records)
