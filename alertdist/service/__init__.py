"""The archive as an HTTP service: any alert, any object, its cutouts and light curve, searches and the files.

Read-only and stateless (caches only), so replicas behind a load balancer scale it. Modules, one job each:
`store` (the archive read through its per-night indexes), `rights` (API tokens, roles, rate limits), `render`
(cutouts and light curves as images), `pages` (HTML), `app` (the FastAPI routes), `server` (uvicorn workers).
"""
