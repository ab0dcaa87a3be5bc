"""The dashboard: server-rendered pages (Jinja2) on the daemon's FastAPI app, with htmx and uPlot
vendored under static/ (licenses in static/licenses/). Pages read the same functions as the CLI
and the JSON API (`queries`, `writes`); charts read GET /jobs/{id}/series (downsampled on the
server). Pages without charts work with JavaScript off.

    mount(app, ctx)   adds / (redirect), /ui/..., /static/..., /jobs/{id}/series and /docs
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
LICENSE_WARN = ("AGPL", "GPL-3.0", "NC", "non-commercial", "noncommercial")
"""Licenses a lab's site may not use freely (a site sets its own list: [web] license_warn)."""


def license_warning(license: str | None, patterns=LICENSE_WARN) -> str | None:
    """A visible warning for a license the site's policy flags, or None."""
    if not license:
        return "no license stated"
    low = license.lower()
    for p in patterns:
        if p.lower() in low:
            if "agpl" in low:
                return f"{license}: serving this model or its weights over a network obliges you to publish your code"
            if "nc" in low.split("-") or "commercial" in low:
                return f"{license}: non-commercial use only"
            return f"{license}: copyleft; check your use"
    return None


def mount(app, ctx):
    """Add the dashboard's routes to the API's app. `ctx` carries home, store, daemon, the token
    book, the registry loader, share_logs and the function that reads a bearer token."""
    from fastapi.staticfiles import StaticFiles

    from . import jobpage, pages, runs

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    ui = pages.routes(app, ctx)
    runs.routes(app, ctx, ui)
    jobpage.routes(app, ctx, ui)
    jobpage.infer_routes(app, ctx, ui)
    docs(app)


def docs(app):
    """/docs: Swagger UI from the vendored swagger-ui-dist (static/swagger-ui-*), no CDN: it loads
    on a server with no way out. The app is made with docs_url=None; this page takes its place."""
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get("/docs", include_in_schema=False)
    async def swagger():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} · API", swagger_js_url="/static/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui.css", swagger_favicon_url="/static/swagger-favicon-32x32.png")
