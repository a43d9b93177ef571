"""The tutorial's format check (step 5.1.2), reporting every bad record instead of stopping."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .records import FORMATS, chat_messages, parsed_lines, record_format, validate_record


@dataclass
class CheckReport:
    path: Path
    data_format: str
    total: int = 0  # records read (good and bad; blank lines do not count)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total > 0 and not self.errors


def check_file(path: str | Path, data_format: str = "auto", show_ok: int = 5, echo=print) -> CheckReport:
    """Check every line of a JSONL file; print ``✓ Sample i: OK`` for the first `show_ok` good
    records, each problem with its line number, and ``Total samples: N``.

    'auto' and 'mixed' take each record's format from its keys; the report's format is then the
    file's: fim, chat, or mixed when it holds both.
    """
    path = Path(path)
    if data_format not in ("auto", *FORMATS):
        raise ValueError(f"unknown data format {data_format!r}: expected auto, fim, chat or mixed")
    report = CheckReport(path, data_format)
    good = 0
    for lineno, record in parsed_lines(path):
        report.total += 1
        try:
            if isinstance(record, ValueError):  # bad UTF-8 or JSON
                raise record
            fmt = data_format
            if fmt in ("auto", "mixed"):
                fmt = record_format(record) if isinstance(record, dict) else None
                if fmt is None:
                    raise ValueError("neither fim (prefix/middle/suffix) nor chat (conversations/messages)")
                seen = report.data_format
                report.data_format = fmt if seen in ("auto", fmt) else "mixed"
            validate_record(record, fmt)
        except ValueError as e:  # bad UTF-8 or JSON, or a bad record
            report.errors.append((lineno, str(e)))
        else:
            if fmt == "fim" and not record["middle"].strip():
                report.warnings.append((lineno, "empty middle: teaches only the end token"))
            if fmt == "chat" and any(not m["content"].strip() for m in chat_messages(record)):
                report.warnings.append((lineno, "a message has empty content"))
            if good < show_ok:
                echo(f"✓ Sample {report.total - 1}: OK")
            good += 1
            continue
        echo(f"✗ {path}:{lineno}: {report.errors[-1][1]}")
    for lineno, msg in report.warnings[:20]:
        echo(f"! {path}:{lineno}: {msg}")
    if len(report.warnings) > 20:
        echo(f"! ... and {len(report.warnings) - 20} more warnings")
    if report.total == 0:
        report.errors.append((0, "empty file: no records"))
        echo(f"✗ {path}: empty file: no records")
    echo(f"Total samples: {report.total}")
    echo(f"Format: {report.data_format}, good: {good}, bad: {len(report.errors)}, warnings: {len(report.warnings)}")
    return report
