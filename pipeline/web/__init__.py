"""The live web view and review page: `state` (what is shown, no HTTP), `app` (Starlette routes and
the page), `server` (uvicorn and the feed subscriber beside a run)."""
