"""The on-call web console: routes (:mod:`alerts.web.routes`), its read queries
(:mod:`alerts.web.reads`), templates and the static assets it serves itself (no CDN)."""
