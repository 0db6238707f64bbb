"""What a report is written as: table cells and Markdown/HTML/LaTeX tables, figures, the report bundle (report.md, report.html, latex/) and its LaTeX build."""
