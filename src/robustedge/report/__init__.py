"""Report: run folders' JSON -> self-contained HTML (embedded PNG figures) + Markdown."""

from robustedge.report.build import Report, build_report

__all__ = ["Report", "build_report"]
