"""`apigen-mt view`: a local, read-only web app over a run folder (Starlette, Jinja2 templates, inline SVG charts),
and the same overview and a sample of trials as one self-contained HTML file. Above export (it draws the charts of
`pipeline.export.charts`), below cli."""
