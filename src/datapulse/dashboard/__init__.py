"""The dashboard: ``GET /`` (what this server is), ``/dashboard`` (a web console: sessions, tools, figures, audit,
"try it", watching a session's frames) and its JSON API under ``/dashboard/api/``. See ``docs/dashboard.md``."""
